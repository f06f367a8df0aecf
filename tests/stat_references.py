"""Brute-force references for the report's statistics, torch-free (the report's own tests import them in
processes that must not load torch)."""


def holm_by_definition(p: list[float]) -> list[float]:
    """Holm (1979) adjusted p-values by the definition, a reference for the report's vectorised correction:
    p_(i) -> max_{j<=i} min(1, (m-j+1) p_(j))."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out = [0.0] * len(p)
    for pos, i in enumerate(order):
        out[i] = max(min(1.0, (len(p) - j) * p[order[j]]) for j in range(pos + 1))
    return out
