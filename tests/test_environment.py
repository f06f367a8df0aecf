"""The locked environment: torch and torchvision are a matched pair, and torchvision really imports."""
import subprocess
import sys


def test_torchvision_imports_and_matches_torch():
    code = ("import torch, torchvision; from torchvision.ops import nms; "
            "b = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]); s = torch.tensor([1., .5]); "
            "print(torch.__version__, torchvision.__version__, nms(b, s, .5).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("2.13.0") and out[1].startswith("0.28.0")
    assert out[2] == "[0]"  # the compiled torchvision::nms operator ran


def test_core_packages_import():
    import mlflow
    import sklearn
    import snakemake
    import torch_pruning

    assert int(snakemake.__version__.split(".")[0]) == 9
    assert int(mlflow.__version__.split(".")[0]) == 3
    assert sklearn.__version__ and torch_pruning.__version__
