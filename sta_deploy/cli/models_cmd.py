"""``sta-deploy models``: the registry with parameters and GFLOPs at the paper's r1 values."""

from __future__ import annotations

import json

import click

from .options import json_option


@click.command()
@json_option
def models(as_json):
    """List the models: name, parameters and GFLOPs (fvcore convention) at the paper's r1 values.

    ViT: r1 = 0/32/48/64 (16x224^2 clips); Video Swin: r1 = 0/192/256/320 (32x224^2 clips).
    """
    from ..models.flops import count_flops
    from ..models.registry import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        reports = {r1: count_flops(name, r1) for r1 in entry.paper_r1}
        rows.append(
            {
                "name": name,
                "family": entry.config.family,
                "description": entry.description,
                "params": reports[0].params,
                "paper_r1": list(entry.paper_r1),
                "gflops": {str(r1): report.gflops for r1, report in reports.items()},
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    section = None
    for row in rows:
        if tuple(row["paper_r1"]) != section:
            section = tuple(row["paper_r1"])
            header = f"{'model':<8} {'params':>9}  " + "  ".join(f"{'r1=' + str(r1):>7}" for r1 in section) + "  description"
            click.echo(("\n" if rows.index(row) else "") + header)
            click.echo("-" * len(header))
        gflops = "  ".join(f"{row['gflops'][str(r1)]:>7.1f}" for r1 in row["paper_r1"])
        click.echo(f"{row['name']:<8} {row['params'] / 1e6:>8.1f}M  {gflops}  {row['description']}")
    click.echo("\nGFLOPs per clip, one multiply-add = one FLOP (fvcore), STA's own products excluded.")
