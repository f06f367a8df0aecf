"""Model zoo: published counts, forward order, module-only forwards, shapes round trip, errors."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunelab.models import (MODELS, Add, ShortcutA, architecture, build_model, classifier_name, model_names,
                             prunable_layers, register_model)

OWN = ["mlp", "lenet300_100", "cnn", "lenet5", "vgg11", "resnet20"]  # one per code path (vgg16, resnet56: same)


def arch(name, in_shape=(3, 32, 32), k=10, **options):
    return {"name": name, "options": options, "in_shape": list(in_shape), "num_classes": k}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def hand_macs(model, in_shape):
    """Conv2d: output elements x in/groups x kH x kW; Linear: in x out (per sample), via forward hooks."""
    total = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total.append(out[0].numel() * m.in_channels // m.groups * kh * kw)
        else:
            total.append(m.in_features * m.out_features)

    hs = [m.register_forward_hook(hook) for _, m in prunable_layers(model)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *in_shape))
    for h in hs:
        h.remove()
    return sum(total)


def counter_macs(model, in_shape):
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(torch.zeros(1, *in_shape))
    return fc.get_total_flops() // 2


# ---- published / hand counts --------------------------------------------------------------------

@pytest.mark.parametrize("spec, params, macs", [
    (arch("resnet56"), 853_018, 125_485_696),
    (arch("resnet56", shortcut="B"), 855_770, 125_747_840),
    (arch("resnet110"), 1_727_962, 252_887_680),
    # LeNet-5 on MNIST by hand: 24*24*20*25 + 8*8*50*20*25 + 800*500 + 500*10
    (arch("lenet5", (1, 28, 28)), 431_080, 288_000 + 1_600_000 + 400_000 + 5_000),
    # with batchnorm: + 2 * (20 + 50 + 500) affine BN params; BN adds no conv/linear MACs
    (arch("lenet5", (1, 28, 28), batchnorm=True), 431_080 + 1_140, 288_000 + 1_600_000 + 400_000 + 5_000),
    (arch("lenet300_100", (1, 28, 28)), 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10,
     784 * 300 + 300 * 100 + 100 * 10),
])
def test_published_counts(spec, params, macs):
    model = build_model(spec)
    assert n_params(model) == params
    assert hand_macs(model, spec["in_shape"]) == macs
    assert counter_macs(model, spec["in_shape"]) == macs


def test_resnet_depths_and_blocks():
    for depth in (20, 32, 44, 56, 110):
        model = build_model(arch(f"resnet{depth}"))
        convs = [n for n, m in prunable_layers(model) if isinstance(m, nn.Conv2d)]
        assert len(convs) + 1 == depth  # option A: every weighted layer is on the main path
        adds = [m for m in model.modules() if isinstance(m, Add)]
        assert len(adds) == 3 * (depth - 2) // 6
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == len(convs)  # BN after every conv
    assert repr(build_model(arch("resnet20"))) == repr(build_model(arch("resnet20", shortcut="A")))
    b = build_model(arch("resnet20", shortcut="B"))
    projections = [n for n, m in b.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert projections == ["layer2.0.shortcut.conv", "layer3.0.shortcut.conv"]


def test_mlp_and_cnn_structure():
    m = build_model(arch("mlp", (1, 8, 8), 10))
    assert [(l.in_features, l.out_features) for _, l in prunable_layers(m)] == [(64, 128), (128, 64), (64, 10)]
    m = build_model(arch("mlp", (1, 8, 8), 3, hidden=[5]))
    assert n_params(m) == 64 * 5 + 5 + 5 * 3 + 3
    m = build_model(arch("cnn", (1, 8, 8), 10))
    assert [l.out_channels for _, l in prunable_layers(m)[:-1]] == [16, 32, 64]
    assert n_params(m) == 9 * (1 * 16 + 16 * 32 + 32 * 64) + 2 * (16 + 32 + 64) + 64 * 10 + 10
    # 3x3 convs at 8x8, 8x8, then 4x4 after the pool, + Linear
    assert hand_macs(m, (1, 8, 8)) == 64 * 9 * 16 + 64 * 9 * 16 * 32 + 16 * 9 * 32 * 64 + 640
    m = build_model(arch("cnn", (1, 8, 8), 10, widths=[4, 6]))
    assert [l.out_channels for _, l in prunable_layers(m)[:-1]] == [4, 6]


def test_vgg_structure_and_small_inputs():
    for name, n_conv in (("vgg11", 8), ("vgg16", 13)):
        m = build_model(arch(name))
        convs = [l for _, l in prunable_layers(m) if isinstance(l, nn.Conv2d)]
        assert len(convs) == n_conv and convs[-1].out_channels == 512
        assert classifier_name(m) == "classifier" and m.classifier.in_features == 512
        assert sum(isinstance(x, nn.MaxPool2d) for x in m.modules()) == 5
        small = build_model(arch(name, (1, 8, 8)))
        assert sum(isinstance(x, nn.MaxPool2d) for x in small.modules()) == 3  # 8 -> 4 -> 2 -> 1
    # 3x3 convs on 32, 16, 8, 8, 4, 4, 2, 2 + Linear
    spatial = [32, 16, 8, 8, 4, 4, 2, 2]
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    want = sum(s * s * 9 * chans[i] * chans[i + 1] for i, s in enumerate(spatial)) + 5120
    assert hand_macs(build_model(arch("vgg11")), (3, 32, 32)) == want


# ---- adaptation to input and classes --------------------------------------------------------------

@pytest.mark.parametrize("name", OWN + ["resnet20/B", "tv:resnet18"])
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 32, 32), (2, 28, 20)])
def test_adapts_to_input_and_classes(name, in_shape):
    name, _, sc = name.partition("/")
    opts = {"shortcut": sc} if sc else {}
    if name == "lenet5" and in_shape[1] < 16:
        with pytest.raises(ValueError, match="lenet5 needs inputs of at least 16x16"):
            build_model(arch(name, in_shape, 7, **opts))
        return
    model = build_model(arch(name, in_shape, 7, **opts)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *in_shape)).shape == (2, 7)
    first = prunable_layers(model)[0][1]
    assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) in (
        in_shape[0], in_shape[0] * in_shape[1] * in_shape[2])


# ---- forward order, classifier, modules-only forward ---------------------------------------------

@pytest.mark.parametrize("spec", [arch(n) for n in OWN] + [
    arch("resnet20", shortcut="B"), arch("tv:resnet18"), arch("tv:mobilenet_v2"), arch("tv:resnet18", (1, 28, 28))])
def test_prunable_layers_in_forward_order_and_classifier(spec):
    if spec["name"] in ("lenet5", "lenet300_100"):
        spec["in_shape"] = [1, 28, 28]
    model = build_model(spec).eval()
    called, outs = [], {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m, inp, out):
        called.append(names[m])
        outs[names[m]] = out

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        logits = model(torch.randn(2, *spec["in_shape"]))
    for h in hs:
        h.remove()
    assert [n for n, _ in prunable_layers(model)] == called
    cls = classifier_name(model)
    assert isinstance(model.get_submodule(cls), nn.Linear)
    assert torch.equal(outs[cls], logits)


def test_classifier_names():
    want = {"mlp": "fc3", "lenet300_100": "fc3", "cnn": "fc", "lenet5": "fc2", "vgg11": "classifier",
            "vgg16": "classifier", "resnet20": "fc", "resnet110": "fc"}
    for name, cls in want.items():
        assert classifier_name(build_model(arch(name, (1, 28, 28)))) == cls
    assert classifier_name(build_model(arch("tv:mobilenet_v2"))) == "classifier.1"


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (Add, ShortcutA)) or super().is_leaf_module(m, qualname)


@pytest.mark.parametrize("spec", [arch(n, (1, 28, 28)) for n in model_names()] +
                         [arch("resnet20", shortcut="B")])
def test_every_op_is_a_module(spec):
    """No functional relu / flatten / '+' in prunelab forwards: every traced op is a module call."""
    model = build_model(spec)
    graph = _LeafTracer().trace(model)
    ops = [n for n in graph.nodes if n.op not in ("placeholder", "output", "call_module")]
    assert ops == [], [(n.op, n.target) for n in ops]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(r.inplace for r in relus)


def test_shortcut_a_matches_hand_reference():
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()
    assert sum(p.numel() for p in ShortcutA(16, 32, 2).parameters()) == 0
    block = build_model(arch("resnet20")).layer2[0]
    assert isinstance(block.shortcut, ShortcutA)
    assert torch.equal(Add()(x, x), 2 * x)


# ---- determinism and init -------------------------------------------------------------------------

@pytest.mark.parametrize("name", OWN + ["tv:resnet18"])
def test_deterministic_init(name):
    spec = arch(name, (1, 28, 28))
    sds = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        sds.append(build_model(spec).state_dict())
    assert sds[0].keys() == sds[1].keys()
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
    assert any(not torch.equal(sds[0][k], sds[2][k]) for k in sds[0])


def test_standard_init():
    torch.manual_seed(0)
    model = build_model(arch("vgg16"))
    conv = model.features[-4]  # 512 -> 512, 3x3: Kaiming normal, fan_out, std = sqrt(2 / (512 * 9))
    assert isinstance(conv, nn.Conv2d) and conv.out_channels == 512
    assert conv.weight.mean().abs() < 1e-3
    assert abs(conv.weight.std().item() / (2 / (512 * 9)) ** 0.5 - 1) < 0.01
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


# ---- shapes: rebuild physically pruned models ------------------------------------------------------

def _randomize(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()


def _shrink(model, name, bn, readers, keep):
    """Keep output units `keep` of layer `name` (+ its BN) and the matching inputs of `readers`."""
    idx = torch.as_tensor(keep)
    old = model.get_submodule(name)
    if isinstance(old, nn.Conv2d):
        new = nn.Conv2d(old.in_channels, len(keep), old.kernel_size, old.stride, old.padding,
                        bias=old.bias is not None)
    else:
        new = nn.Linear(old.in_features, len(keep), bias=old.bias is not None)
    new.weight.data = old.weight.data[idx].clone()
    if old.bias is not None:
        new.bias.data = old.bias.data[idx].clone()
    model.set_submodule(name, new)
    if bn:
        ob = model.get_submodule(bn)
        nb = type(ob)(len(keep))
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(nb, k).data = getattr(ob, k).data[idx].clone()
        model.set_submodule(bn, nb)
    for r in readers:
        o = model.get_submodule(r)
        if isinstance(o, nn.Conv2d):
            n = nn.Conv2d(len(keep), o.out_channels, o.kernel_size, o.stride, o.padding, bias=o.bias is not None)
        else:
            n = nn.Linear(len(keep), o.out_features, bias=o.bias is not None)
        n.weight.data = o.weight.data[:, idx].clone()
        if o.bias is not None:
            n.bias.data = o.bias.data.clone()
        model.set_submodule(r, n)


@pytest.mark.parametrize("spec, layer, bn, readers, n_out", [
    (arch("cnn", (1, 8, 8)), "conv2", "bn2", ["conv3"], 32),
    (arch("mlp", (1, 8, 8)), "fc1", None, ["fc2"], 128),
    (arch("resnet20"), "layer2.1.conv1", "layer2.1.bn1", ["layer2.1.conv2"], 32),
    (arch("resnet20", shortcut="B"), "layer2.0.conv1", "layer2.0.bn1", ["layer2.0.conv2"], 32),
    (arch("tv:resnet18", (1, 32, 32)), "layer1.0.conv1", "layer1.0.bn1", ["layer1.0.conv2"], 64),
    (arch("vgg11"), "features.4", "features.5", ["features.8"], 128),
])
def test_shapes_round_trip(spec, layer, bn, readers, n_out):
    torch.manual_seed(0)
    model = build_model(spec)
    _randomize(model)
    assert getattr(model.get_submodule(layer), "out_channels", None) in (n_out, None)
    keep = list(range(0, n_out, 3))
    _shrink(model, layer, bn, readers, keep)
    model.eval()
    rec = architecture(model, spec)
    assert "shapes" not in spec  # arch is copied, not modified
    s = rec["shapes"][layer]
    assert s["out"] == len(keep) and all(rec["shapes"][r]["in"] == len(keep) for r in readers)
    if bn:
        assert rec["shapes"][bn] == {"num_features": len(keep)}
    torch.manual_seed(123)  # a different init: everything must come from the state dict
    rebuilt = build_model(rec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.randn(4, *spec["in_shape"])
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert architecture(rebuilt, spec) == rec


@pytest.mark.parametrize("spec", [arch("resnet20", shortcut="B"), arch("tv:mobilenet_v3_small")])
def test_shapes_after_torch_pruning(spec):
    """A real torch-pruning run (residual stream and depthwise groups included) rebuilds from data."""
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = build_model(spec)
    _randomize(model)
    x = torch.randn(2, *spec["in_shape"])
    cls = model.get_submodule(classifier_name(model))
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[cls])
    pruner.step()
    model.eval()
    rec = architecture(model, spec)
    assert rec["shapes"] != architecture(build_model(spec), spec)["shapes"]
    rebuilt = build_model(rec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


# ---- torchvision ------------------------------------------------------------------------------------

def test_torchvision_adapts_first_conv_and_classes():
    m = build_model(arch("tv:resnet18", (1, 28, 28), 5))
    assert m.conv1.in_channels == 1 and m.conv1.out_channels == 64 and m.conv1.kernel_size == (7, 7)
    assert m.fc.out_features == 5 and classifier_name(m) == "fc"
    m3 = build_model(arch("tv:resnet18", (3, 32, 32), 5))
    assert m3.conv1.in_channels == 3
    assert n_params(m3) - n_params(m) == 64 * 2 * 49


# ---- errors ---------------------------------------------------------------------------------------

def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'.*'cnn'.*'vgg16'"):
        build_model(arch("resnet18"))
    with pytest.raises(ValueError, match=r"unknown torchvision model 'nope'.*resnet18"):
        build_model(arch("tv:nope"))
    with pytest.raises(ValueError, match=r"'resnet20': unknown options \['depth'\]; valid options: \['shortcut'\]"):
        build_model(arch("resnet20", depth=3))
    with pytest.raises(ValueError, match=r"option 'shortcut' must be 'A' or 'B', got 'C'"):
        build_model(arch("resnet20", shortcut="C"))
    with pytest.raises(ValueError, match=r"option 'hidden' must be a list of positive ints"):
        build_model(arch("mlp", hidden=[10, 0]))
    with pytest.raises(ValueError, match=r"option 'widths' must be a list of positive ints \(non-empty\)"):
        build_model(arch("cnn", widths=[]))
    with pytest.raises(ValueError, match=r"in_shape"):
        build_model(arch("cnn", (8, 8)))
    with pytest.raises(ValueError, match=r"num_classes"):
        build_model(arch("cnn", k=0))
    with pytest.raises(ValueError, match=r"missing 'num_classes'"):
        build_model({"name": "cnn", "in_shape": [1, 8, 8]})
    with pytest.raises(ValueError, match=r"unknown keys \['shape'\]"):
        build_model({**arch("cnn"), "shape": {}})
    with pytest.raises(KeyError, match=r"'conv9'.*does not exist"):
        build_model({**arch("cnn"), "shapes": {"conv9": {"in": 3, "out": 4, "groups": 1}}})
    with pytest.raises(KeyError, match=r"'relu1' of type ReLU"):
        build_model({**arch("cnn"), "shapes": {"relu1": {"num_features": 4}}})
    with pytest.raises(ValueError, match=r"shapes\['bn1'\].*\['num_features'\]"):
        build_model({**arch("cnn"), "shapes": {"bn1": {"in": 4}}})
    with pytest.raises(ValueError, match=r"option 'weights' is set by prunelab"):
        build_model(arch("tv:resnet18", weights="DEFAULT"))


def test_registry():
    assert {"mlp", "lenet300_100", "cnn", "lenet5", "vgg11", "vgg16", "resnet20", "resnet32", "resnet56",
            "resnet110"} <= set(model_names())
    assert model_names() == sorted(MODELS)

    @register_model("_test_tiny")
    def tiny(in_shape, num_classes, width=3):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes))

    try:
        assert n_params(build_model(arch("_test_tiny", (1, 2, 2), 3))) == 4 * 3 + 3
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_tiny")(tiny)
    finally:
        del MODELS["_test_tiny"]


def test_place_puts_conv_models_channels_last_on_cpu_with_the_same_logits(tmp_path):
    from prunelab.io import load_model, save_model
    from prunelab.models import place

    arch = {"name": "resnet20", "options": {}, "in_shape": [3, 16, 16], "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        assert place(model, "cpu") is model
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    save_model(tmp_path / "m.pt", model, arch)
    loaded, _, _ = load_model(tmp_path / "m.pt")
    loaded.eval()
    conv = next(m for m in loaded.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-5)
    mlp = place(build_model({"name": "mlp", "options": {}, "in_shape": [1, 8, 8], "num_classes": 10}), "cpu")
    assert all(p.is_contiguous() for p in mlp.parameters())


def test_dense_only_registry_flag_matches_the_built_models():
    """DENSE_ONLY (registered with convolutional=False) is exactly the models built without a Conv2d."""
    from prunelab.checks.models import meta_build
    from prunelab.models import DENSE_ONLY, MODELS

    with meta_build():
        has_conv = {name: any(isinstance(m, torch.nn.Conv2d) for m in MODELS[name]((3, 32, 32), 10).modules())
                    for name in MODELS}
    assert DENSE_ONLY == {name for name, conv in has_conv.items() if not conv}
    assert DENSE_ONLY  # the mlp and LeNet-300-100
