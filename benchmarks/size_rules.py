"""Fit the size rules in profiles/quants.toml [sizes] from the real GGUF sizes, and show how well
they reproduce them.

Usage: python benchmarks/size_rules.py [--toml]

Reads tests/data/reference/gguf_sizes.csv (the real file sizes of gguf-sizes.md) and the catalog's
shapes. Per size class (dense, moe, hybrid, hybrid-moe) and quant, bits per weight are fitted as
`output` (the vocab x hidden output matrix, or the tied embedding) and `body` (all the rest):
a least-squares line of bits per weight against the output matrix's share of the weights where
the rows span small and large models, else `output` = Q6_K's 6.5625 (8.5 for Q8_0) and `body`
the mean that reproduces the rows. Rows whose hidden size is not a multiple of 256 (k-quant
fallbacks) are not fitted. `--toml` prints the table to paste; otherwise the errors: in sample,
and leaving each model out of the fit in turn (how the rule does on a model it has not seen).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from qwencli.catalog import SIZE_CLASSES, Catalog, SizeRules, estimate_size, load_catalog

CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "reference" / "gguf_sizes.csv"
Row = dict[str, str]


def rows() -> list[Row]:
    with CSV.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _inputs(catalog: Catalog, row: Row) -> dict:
    spec = catalog.get(row["model"])
    source = next((s for s in spec.gguf if s.repo == row["repo"]), None)
    return {"arch": spec.arch, "params": spec.params_gguf, "vocab_size": spec.vocab_size,
            "hidden_size": spec.hidden_size,
            "output_copy": bool(source is not None and source.output_copy)}


def fit(catalog: Catalog, data: list[Row]) -> SizeRules:
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in data:
        x = _inputs(catalog, row)
        if x["hidden_size"] % 256:
            continue
        total = x["params"] + (x["vocab_size"] * x["hidden_size"] if x["output_copy"] else 0)
        share = x["vocab_size"] * x["hidden_size"] / total
        groups[(SIZE_CLASSES[x["arch"]], row["quant"])].append(
            (share, int(row["bytes"]) * 8 / total))
    fitted = []
    for (size_class, quant), points in sorted(groups.items()):
        shares = [p[0] for p in points]
        if len(points) >= 3 and max(shares) - min(shares) > 0.08:
            mx = statistics.mean(shares)
            my = statistics.mean(p[1] for p in points)
            slope = (sum((s - mx) * (b - my) for s, b in points)
                     / sum((s - mx) ** 2 for s in shares))
            body = my - slope * mx
            output = body + slope
        else:
            output = 8.5 if quant == "Q8_0" else 6.5625
            body = statistics.mean((b - s * output) / (1 - s) for s, b in points)
        fitted.append((size_class, quant, round(output, 3), round(body, 3)))
    return SizeRules(tuple(fitted), catalog.size_rules.fallback_bpw)


def errors(catalog: Catalog, rules: SizeRules, data: list[Row]) -> list[tuple[float, Row]]:
    out = []
    for row in data:
        estimate = estimate_size(rules, quant=row["quant"], **_inputs(catalog, row))
        out.append((estimate / int(row["bytes"]) - 1, row))
    return out


def summary(label: str, errs: list[tuple[float, Row]]) -> None:
    size = sorted(abs(e) for e, _ in errs)
    worst = max(errs, key=lambda e: abs(e[0]))
    print(f"{label}: {len(size)} rows, median |error| {statistics.median(size):.2%}, "
          f"worst {worst[0]:+.2%} ({worst[1]['model']} {worst[1]['quant']} {worst[1]['repo']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toml", action="store_true", help="print the [sizes] table")
    args = parser.parse_args()
    catalog = load_catalog()
    data = rows()
    rules = fit(catalog, data)
    if args.toml:
        current = None
        for size_class, quant, output, body in rules.rules:
            if size_class != current:
                print(f"\n[sizes.{size_class}]")
                current = size_class
            print(f'{quant} = {{ output = {output}, body = {body} }}')
        return
    summary("catalog rule (quants.toml [sizes])", errors(catalog, catalog.size_rules, data))
    summary("refitted here, in sample", errors(catalog, rules, data))
    held_out = []
    for model in sorted({r["model"] for r in data}):
        rest = [r for r in data if r["model"] != model]
        held_out += errors(catalog, fit(catalog, rest), [r for r in data if r["model"] == model])
    summary("leave one model out", held_out)
    for e, row in sorted(held_out, key=lambda t: -abs(t[0]))[:8]:
        print(f"  held out {e:+.2%}  {row['model']} {row['quant']} {row['repo']}")


if __name__ == "__main__":
    main()
