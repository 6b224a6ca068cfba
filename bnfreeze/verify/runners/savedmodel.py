"""SavedModel folders on TensorFlow's CPU or GPU, through any signature.

The signature is chosen by name (``serving_default`` unless told otherwise),
so SavedModels written by anything — Keras's ``model.export``, a
``tf.Module`` saved with ``tf.saved_model.save(module, path, signatures=...)``
— run the same way. A ``tf.Module`` saved *without* signatures still has its
``tf.function`` attributes: a function of that name with exactly one traced
input signature is called instead (for the default ``serving_default``, the
module's ``__call__``).

Signature outputs are a dict; a plain function's outputs are named
``output_0``, ``output_1``, ... in their order (a dict keeps its keys), which
is also how Keras names the outputs of ``model.export``.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import IOSpec, Runner, first_line, tf_device

DEFAULT_SIGNATURE = "serving_default"


class SavedModelRunner(Runner):
    backend = "savedmodel"
    devices = ("cpu", "gpu")
    #: signature outputs are a map (keys ``output_i`` say their position themselves)
    outputs_in_model_order = False

    def __init__(self, path, device="cpu", *, signature: str | None = None):
        super().__init__(path, device)
        self.signature = signature or DEFAULT_SIGNATURE

    def load(self) -> None:
        import tensorflow as tf

        self._device = tf_device(self.device)
        with tf.device(self._device):
            try:
                self._loaded = tf.saved_model.load(str(self.path))
            except Exception as exc:
                raise InputError(f"{self.path}: cannot be loaded as a SavedModel ({type(exc).__name__}: "
                                 f"{first_line(exc)})") from exc
        signatures = dict(getattr(self._loaded, "signatures", {}) or {})
        self._positional = None
        if self.signature in signatures:
            self._function = signatures[self.signature]
            self._inputs = self._signature_inputs()
            self.provider = f"{self._device} {self.signature}"
        else:
            function = self._plain_function(signatures)
            concrete = function.concrete_functions[0]
            args, kwargs = concrete.structured_input_signature
            specs = list(args) + [kwargs[k] for k in sorted(kwargs)]
            if kwargs or not all(isinstance(s, tf.TensorSpec) for s in specs):
                raise InputError(f"{self.path}: function {self.signature} takes arguments other than tensors; "
                                 f"give a signature with --signature")
            self._function = function
            self._positional = [s.name or f"input_{i}" for i, s in enumerate(specs)]
            self._inputs = [IOSpec(name, tuple(s.shape), s.dtype.name) for name, s in zip(self._positional, specs)]
            self._structured_outputs = concrete.structured_outputs
            self.provider = f"{self._device} {self._function_name}()"
        self._outputs = self._output_specs()

    def _plain_function(self, signatures):
        """The restored ``tf.function`` to call where no signature has the requested name."""
        functions = {
            name: value for name, value in vars(self._loaded).items()
            if hasattr(value, "concrete_functions") and not name.startswith("_self")
        }
        name = self.signature
        if name not in functions and name == DEFAULT_SIGNATURE and not signatures and "__call__" in functions:
            name = "__call__"
        function = functions.get(name)
        if function is None:
            have = ", ".join(f"signature {k}" for k in signatures) or "no signatures"
            plain = ", ".join(f"function {k}" for k in functions if k in ("__call__",) or not k.startswith("_"))
            raise InputError(f"{self.path}: the SavedModel has no signature {self.signature!r} "
                             f"(it has {have}{', ' + plain if plain else ''}); choose one with --signature")
        if len(function.concrete_functions) != 1:
            raise InputError(f"{self.path}: function {name} was traced for {len(function.concrete_functions)} "
                             f"input signatures; bnfreeze calls a function with exactly one (or a signature)")
        self._function_name = name
        return function

    def _signature_inputs(self) -> list[IOSpec]:
        _, kwargs = self._function.structured_input_signature
        return [IOSpec(name, tuple(spec.shape), spec.dtype.name)
                for name, spec in sorted(kwargs.items(), key=lambda item: item[0])]

    def _output_specs(self) -> list[IOSpec]:
        import tensorflow as tf

        if self._positional is None:
            outputs = self._function.structured_outputs
            return [IOSpec(name, tuple(outputs[name].shape), outputs[name].dtype.name)
                    for name in sorted(outputs, key=_output_order)]
        structure = self._structured_outputs
        if isinstance(structure, dict):
            items = [(name, structure[name]) for name in sorted(structure, key=_output_order)]
        else:
            items = [(f"output_{i}", s) for i, s in enumerate(tf.nest.flatten(structure))]
        return [IOSpec(name, tuple(s.shape), s.dtype.name) for name, s in items]

    def input_specs(self):
        return list(self._inputs)

    def output_specs(self):
        return list(self._outputs)

    def infer(self, feed):
        import tensorflow as tf

        with tf.device(self._device):
            if self._positional is None:
                outputs = self._function(**{name: tf.constant(value) for name, value in feed.items()})
            else:
                result = self._function(*[tf.constant(feed[name]) for name in self._positional])
                if isinstance(result, dict):
                    outputs = result
                else:
                    outputs = {f"output_{i}": t for i, t in enumerate(tf.nest.flatten(result))}
        return {spec.name: np.asarray(outputs[spec.name]) for spec in self._outputs}

    def close(self) -> None:
        self._loaded = self._function = None


def _output_order(name: str):
    # Keras and tf.saved_model name outputs output_0, output_1, ... in model order
    suffix = name.rsplit("_", 1)[-1]
    return (0, int(suffix), name) if suffix.isdigit() else (1, 0, name)
