"""`qwen hw`: what this machine has, and the memory budget the planner uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwencli.cli._common import JsonOpt, command, command_app, machine, whatif_options

if TYPE_CHECKING:
    from qwencli.hardware.whatif import WhatIf

app = command_app()


@command(app, "hw")
@whatif_options
def hw(json_output: JsonOpt = False, *, whatif: WhatIf) -> None:
    """Show what this machine has: CPU, memory, GPUs, the llama.cpp build, and the budget.

    Examples:

      qwen hw

      qwen hw --json

      qwen hw --hardware apple-m2-8gb
    """
    from qwencli import output, reports

    hardware, budget = machine(whatif)
    if json_output:
        output.print_json(reports.hardware_document(hardware, budget))
    else:
        output.print_report(reports.hardware_sections(hardware, budget))
