"""The inference form latency is timed in (`prunelab.measure.deploy`): BN folded, placed, optionally compiled; its
logits against the original model's, and the checks that refuse a setting this machine cannot run."""

import jsonschema
import pytest
import torch
import yaml
from test_removal import make
from torch import nn

from conftest import REPO, TINY
from prunelab.jobs import Job, check_latency_settings
from prunelab.measure.deploy import compile_problem, inference_model, latency_form
from prunelab.measure.latency import latency_ms

ARCHS = [("mlp", (1, 8, 8), {}), ("lenet5", (1, 28, 28), {}), ("vgg11", (3, 32, 32), {}),
         ("resnet20", (3, 16, 16), {"shortcut": "A"}), ("resnet20", (3, 16, 16), {"shortcut": "B"})]


def trained_looking(name, in_shape, options):
    """A zoo model whose BNs (and biases) have non-trivial statistics, as after training; in training mode."""
    return make(name, in_shape, **options)[0].train()


@pytest.mark.parametrize("name,in_shape,options", ARCHS, ids=[f"{a[0]}{a[2].get('shortcut', '')}" for a in ARCHS])
def test_folded_form_gives_the_models_logits_and_leaves_it_alone(name, in_shape, options):
    model = trained_looking(name, in_shape, options)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, *in_shape)
    form = inference_model(model, "cpu", check_input=x[:2])
    assert model.training, "the caller's model keeps its training flag"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model itself is unchanged"
    assert not form.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in form.modules()), "every BatchNorm2d is folded"
    with torch.no_grad():
        ref = model.eval()(x)
        got = form(x)
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    convs = [m for m in form.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs), "placed like every job"


class BnBeforeConv(nn.Module):
    """Registration order says conv -> bn, but the forward normalises the INPUT of the conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.head(self.conv(self.bn(x)).flatten(1))


def test_a_bn_folded_into_the_wrong_conv_is_caught():
    torch.manual_seed(0)
    model = BnBeforeConv()
    with torch.no_grad():
        model.bn.running_mean.uniform_(1.0, 2.0)
        model.bn.running_var.uniform_(3.0, 4.0)
    with pytest.raises(ValueError, match="folding BatchNorm"):
        inference_model(model, "cpu", check_input=torch.randn(2, 3, 8, 8))


def test_compiled_form_matches_eager_and_is_timed():
    model = trained_looking("cnn", (3, 8, 8), {}).eval()
    if compile_problem("cpu"):
        pytest.fail(f"this machine is meant to have a C++ compiler for TorchInductor: {compile_problem('cpu')}")
    form = inference_model(model, "cpu", compiled=True)
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        got = form(x)
    with torch.no_grad():
        ref = model(x)
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    lat = latency_ms(model, (3, 8, 8), "cpu", {"warmup": 0, "repeats": 2, "compile": True})
    assert lat["form"] == latency_form(True) == "bn-folded+inductor"
    assert lat["b1"] > 0 and lat["b64"] > 0


def test_missing_compiler_is_refused_before_the_job_starts(monkeypatch, tmp_path):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    problem = compile_problem("cpu")
    assert problem and "C++ compiler" in problem and "latency.compile: false" in problem
    with pytest.raises(RuntimeError, match="latency.compile on CPU needs a C\\+\\+ compiler"):
        inference_model(nn.Linear(3, 2), "cpu", compiled=True)
    params = {"latency": {"compile": True, "warmup": 1, "repeats": 1}, "device": "cpu"}
    with pytest.raises(RuntimeError, match="rule prune: latency.compile"):
        check_latency_settings("prune", params)
    out = tmp_path / "job"
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        Job("prune", {"arch": "mlp"}, params, out)
    assert not out.exists(), "nothing is written before the check"
    check_latency_settings("prune", {"latency": {"compile": False}, "device": "cpu"})  # eager needs nothing


def test_eager_latency_record_names_its_form():
    lat = latency_ms(trained_looking("mlp", (1, 8, 8), {}), (1, 8, 8), "cpu", {"warmup": 0, "repeats": 3})
    assert lat["form"] == "bn-folded" and lat["b1"] > 0 and lat["b64"] > 0


def schema_errors(latency):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    cfg = yaml.safe_load(TINY.read_text())
    cfg["latency"] = latency
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(cfg)]


def test_schema_accepts_compile_flag_only_as_boolean():
    assert schema_errors({"compile": True}) == []
    assert any("is not of type 'boolean'" in m for m in schema_errors({"compile": "yes"}))
