"""``sta-deploy models``: the registry with parameters and GFLOPs at the paper's r1 values."""

from __future__ import annotations

import json

import click

from .options import json_option

R1_COLUMNS = (0, 32, 48, 64)


@click.command()
@json_option
def models(as_json):
    """List the models: name, parameters and GFLOPs (fvcore convention) at r1 = 0/32/48/64."""
    from ..flops import count_flops
    from ..registry import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        reports = {r1: count_flops(name, r1) for r1 in R1_COLUMNS}
        rows.append(
            {
                "name": name,
                "description": entry.description,
                "params": reports[0].params,
                "gflops": {str(r1): round(report.gflops, 2) for r1, report in reports.items()},
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'model':<8} {'params':>9}  " + "  ".join(f"{'r1=' + str(r1):>7}" for r1 in R1_COLUMNS) + "  description"
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        gflops = "  ".join(f"{row['gflops'][str(r1)]:>7.1f}" for r1 in R1_COLUMNS)
        click.echo(f"{row['name']:<8} {row['params'] / 1e6:>8.1f}M  {gflops}  {row['description']}")
    click.echo("GFLOPs per clip, one multiply-add = one FLOP (fvcore), STA's own products excluded.")
