"""Which layers run in training mode under the model's *default* call, ``model(x)``.

Under ``model(x, training=False)`` (``predict``, every exporter) Keras hands
``training=False`` to every layer, nested models included, and every BN uses
its moving statistics. Under the default call the answer depends on how the
graph was built, and Keras 3 resolves it at run time:

* a call recorded with ``training=True`` (``bn(x, training=True)``) runs in
  training mode;
* a nested Functional/Sequential model called with ``training=True`` passes
  it to every layer inside, to any depth, overriding their own arguments;
* a layer called without ``training`` inherits the value of the *call
  context*, which the last explicit ``training`` of an earlier call in the
  same forward pass has set (checked on Keras 3.15: after
  ``bn1(x, training=True)``, a later ``bn2(y)`` also runs on batch
  statistics).

Rather than re-implement these rules, bnfreeze asks Keras: it runs the model
once under the default call with every layer's ``call`` wrapped to record the
``training`` it receives, and restores every variable afterwards (BNs in
training mode update their moving statistics; dropout advances its seed).
Static reading of the config only names the *cause* for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def recorded_training(value) -> bool | None:
    """A ``training`` argument as Keras acts on it: None when absent, else its truth (``training=1`` is True)."""
    if value is None:
        return None
    return bool(value)


@dataclass
class TrainingModes:
    """Layers (by ``id``) that received a true ``training`` under the default call."""

    active: set[int] = field(default_factory=set)
    #: Why the probe could not run (then every layer counts as possibly in training mode
    #: where the config records any true ``training``), or None.
    failure: str | None = None
    #: The config records a true ``training`` somewhere (for the fallback).
    any_recorded: bool = False
    #: The model holds layers that are not Keras's own (they may read ``training`` their own way).
    custom_layers: bool = False

    def in_training(self, layer) -> bool:
        if self.failure is not None:
            return self.any_recorded
        return id(layer) in self.active

    @property
    def context_matters(self) -> bool:
        """Could removing a call with an explicit ``training=False`` change what later layers do?

        Keras passes an explicit ``training`` on to the layers called after it
        (the call context). Removing a ``training=False`` call hands them the
        value before it instead: ``True`` where some layer receives it, or
        ``None``, which Keras's own layers treat as ``False``; custom layers
        may not.
        """
        return bool(self.active) or self.custom_layers or (self.failure is not None and self.any_recorded)


def _all_layers(model) -> list:
    return [model, *model._flatten_layers(include_self=False, recursive=True)]


def _records_training(config) -> bool:
    """Does a (nested) config record a call with ``training=True``?"""
    if isinstance(config, dict):
        if recorded_training(config.get("training")):
            return True
        return any(_records_training(v) for v in config.values())
    if isinstance(config, (list, tuple)):
        return any(_records_training(v) for v in config)
    return False


def probe_training_modes(model, seed: int = 0) -> TrainingModes:
    """Run ``model`` once under its default call and record who got ``training=True``."""
    from bnfreeze.io.signature import input_specs, pack_inputs
    from bnfreeze.parity import fixed_batch, integer_ranges, preserved_state, random_inputs

    modes = TrainingModes(any_recorded=_records_training(model.get_config()), custom_layers=_has_custom_layers(model))
    if not modes.any_recorded and not modes.custom_layers:
        # Nothing asks for training mode: under the default call every Keras layer gets
        # training=None, which BN, dropout and noise layers treat as inference.
        return modes
    layers = [layer for layer in _all_layers(model) if getattr(layer, "_call_has_training_arg", False)]
    saved = {id(layer): layer.__dict__.get("call") for layer in layers}

    def wrap(layer):
        original = layer.call

        def call(*args, **kwargs):
            if recorded_training(kwargs.get("training")):
                modes.active.add(id(layer))
            return original(*args, **kwargs)

        return call

    try:
        for layer in layers:
            layer.call = wrap(layer)
        specs = input_specs(model)
        arrays = random_inputs(specs, fixed_batch(specs) or 2, seed, int_high=integer_ranges(model))
        with preserved_state(model):
            model(pack_inputs(model, arrays))
    except Exception as exc:  # a model that cannot run on random inputs: fall back to the config
        modes.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    finally:
        for layer in layers:
            if saved[id(layer)] is None:
                layer.__dict__.pop("call", None)
            else:
                layer.call = saved[id(layer)]
    return modes


def _has_custom_layers(model) -> bool:
    """Layers that are not Keras's own may call sublayers with ``training=True`` themselves."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not type(layer).__module__.startswith("keras."):
            return True
    return False
