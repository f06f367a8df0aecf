"""The README's notebook example runs as written: the library path a notebook takes (the pruning stage)."""
import re

import torch

from conftest import REPO
from prunelab.measure import count_macs


def test_readme_notebook_example_runs_and_prunes_half_the_macs(capsys):
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- notebook-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "README.md lost its notebook example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md (notebook example)", "exec"), namespace)
    dense, model, info, data = namespace["dense"], namespace["model"], namespace["info"], namespace["data"]
    shape = tuple(data["in_shape"])
    assert abs(count_macs(model, shape) / count_macs(dense, shape) - 0.5) < 0.05
    assert info["cost_removed"] == 1 - count_macs(model, shape) / count_macs(dense, shape)
    assert "of the MACs removed" in capsys.readouterr().out
    assert all(isinstance(p, torch.Tensor) for p in model.state_dict().values())
