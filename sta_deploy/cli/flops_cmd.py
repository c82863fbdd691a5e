"""``sta-deploy flops``: GFLOPs of one model at one r1."""

from __future__ import annotations

import json

import click

from .options import arch_options, json_option, model_name_options


@click.command()
@model_name_options
@arch_options
@json_option
def flops(model_name, r1, overrides, as_json):
    """Count GFLOPs per clip the way fvcore does (one multiply-add = one FLOP).

    'gflops' is the model without STA's own cost; 'sta_gflops' is STA's similarity and
    transition products.  Reproduces the paper's Table 2.
    """
    from ..models.flops import count_flops

    report = count_flops(model_name, r1, **overrides)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    baseline = count_flops(model_name, 0, **overrides)
    tokens = " -> ".join(str(t) for t in [report.tokens_per_block[0], *report.tokens_per_stage])
    click.echo(f"model        {model_name} (r1={r1})")
    click.echo(f"GFLOPs       {report.gflops:.2f}  ({report.gflops / baseline.gflops:.1%} of r1=0: {baseline.gflops:.2f})")
    click.echo(f"STA GFLOPs   {report.sta_gflops:.4f}  (STA's own products, not in the figure above; total {report.total_gflops:.2f})")
    click.echo(f"parameters   {report.params / 1e6:.1f}M")
    click.echo(f"tokens       {tokens} (input, then after each STA stage)")
    for part, value in report.breakdown.items():
        click.echo(f"  {part:<12} {value:.2f}")
