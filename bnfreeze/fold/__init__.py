"""The fold wing, and ``bnfreeze.fold(model, ...)`` itself.

``graph`` reads the call graph, ``affine`` the map a BN computes, ``rules``
the fold rules (one module each), ``planner`` decides per BN, ``rewrite``
applies the plan to a copy, ``api`` holds :func:`~bnfreeze.fold.api.fold` and
``inspection`` :func:`bnfreeze.inspect`.

The public API names this package's verb: ``bnfreeze.fold(model)`` folds a
model. So that ``bnfreeze.fold`` can be both the function users call and the
package its submodules live in (``import bnfreeze.fold.planner`` must keep
working), the package object is callable and forwards to
:func:`bnfreeze.fold.api.fold`, whose signature and docstring it reports.
"""

import inspect as _inspect
import sys as _sys
import types as _types

from bnfreeze.fold.api import FoldResult, build_report, fold as _fold
from bnfreeze.fold.inspection import NormalizationRow, inspect, plan_rows


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs) -> FoldResult:
        return _fold(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
__signature__ = _inspect.signature(_fold)
__wrapped__ = _fold

__all__ = ["FoldResult", "NormalizationRow", "build_report", "inspect", "plan_rows"]
