"""File-level operations behind the CLI: load, run the API, write atomically.

Each function checks every output path before the expensive work starts, so a
refusal (existing file without ``force``, output equal to the input) costs
nothing and writes nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bnfreeze.errors import InputError
from bnfreeze.folding import FoldResult, fold
from bnfreeze.inspection import NormalizationRow, inspect
from bnfreeze.modelio import atomic_path, check_writable, derived_path, load_model, same_file, to_json


def _check_outputs(model_path: Path, outputs: list[Path | None], force: bool) -> None:
    for out in outputs:
        if out is None:
            continue
        if out.exists() and same_file(out, model_path):
            raise InputError(f"{out}: is the input model; bnfreeze never overwrites its input")
        check_writable(out, force=force)


def fold_file(
    model_path,
    output=None,
    *,
    report=None,
    force: bool = False,
    unsafe: bool = False,
    atol: float,
    rtol: float,
    seed: int = 0,
) -> FoldResult:
    """Fold the model in ``model_path``; write ``output`` (and ``report``) only if parity holds."""
    model_path = Path(model_path)
    output = Path(output) if output is not None else derived_path(model_path, "folded")
    report = Path(report) if report is not None else None
    if output.suffix != ".keras":
        raise InputError(f"{output}: the folded model is saved as .keras; give an output ending in .keras")
    _check_outputs(model_path, [output, report], force)
    model = load_model(model_path, unsafe=unsafe)
    result = fold(model, atol=atol, rtol=rtol, seed=seed)
    result.report["model"] = str(model_path)
    result.report["output"] = str(output)
    with contextlib.ExitStack() as stack:
        result.model.save(stack.enter_context(atomic_path(output, force=force)))
        if report is not None:
            stack.enter_context(atomic_path(report, force=force)).write_text(to_json(result.report))
    return result


def inspect_file(model_path, *, unsafe: bool = False) -> list[NormalizationRow]:
    return inspect(load_model(model_path, unsafe=unsafe))
