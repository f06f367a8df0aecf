"""Method variants (prunelab.methods.variants): sweeps of numbers and words, names read back, and variants that
cannot differ at a granularity run once there."""
from prunelab.methods import unused_options, variant_options
from prunelab.methods.variants import distinct_variants, expand_methods, parse_variant


def test_numbers_and_words_sweep_and_read_back():
    variants = expand_methods({"screening": {"lambda": [0, 0.5], "allocation": ["magnitude", "anova"]},
                               "contribution": {"kappa": [-1, 1]}, "magnitude": {}})
    assert list(variants) == ["screening-allocationmagnitude-lambda0", "screening-allocationmagnitude-lambda0.5",
                              "screening-allocationanova-lambda0", "screening-allocationanova-lambda0.5",
                              "contribution-kappam1", "contribution-kappa1", "magnitude"]
    for name, (method, options) in variants.items():
        base, swept = variant_options(name)
        assert base == method and swept == {k: v for k, v in options.items()}
    assert parse_variant("screening-allocationanova-lambda1", ["lambda", "allocation"]) == \
        ("screening", {"allocation": "anova", "lambda": 1})


def test_variants_differing_only_in_options_a_granularity_does_not_read_run_once_there():
    variants = expand_methods({"contribution": {"kappa": [0, 1]}, "screening": {"lambda": [0.5, 1],
                                                                                "allocation": ["magnitude", "anova"]}})
    assert distinct_variants(variants, unused_options("unstructured")) == list(variants)
    assert distinct_variants(variants, unused_options("structured")) == [
        "contribution-kappa0", "screening-allocationmagnitude-lambda0.5", "screening-allocationmagnitude-lambda1"]
