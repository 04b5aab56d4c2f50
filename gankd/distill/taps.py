"""Feature taps: the outputs of a model's submodules, caught by forward hooks by module path (no rewriting)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def resolve_module(model: nn.Module, path: str, *, role: str = "model") -> nn.Module:
    """The submodule of `model` at `path` ("" is the model itself, "blocks.1" its `blocks[1]`).

    An unknown path raises ValueError naming the closest module paths and how to list them all.
    """
    if not isinstance(path, str):
        raise TypeError(f"{role} module path must be a str, got {type(path).__name__} {path!r}")
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    candidates = difflib.get_close_matches(path, [name for name in modules if name], n=5, cutoff=0.4)
    closest = f"closest: {', '.join(map(repr, candidates))}" if candidates else "no path is close"
    raise ValueError(
        f"{role} ({type(model).__name__}) has no module at path {path!r}; {closest}. "
        f"List them all with [name for name, _ in model.named_modules()]."
    )


class FeatureTaps:
    """Catches the outputs of `model`'s submodules at `paths` with forward hooks, without changing the model.

    Paths are checked at construction. The hooks exist only while attached: use it as a context manager,

        with FeatureTaps(model, ["blocks.1", "up"]) as taps:
            output = model(inputs)
        taps["blocks.1"]          # the output of model.blocks[1] in that forward (still readable after exit)

    or call `attach()` and `detach()`. Each tapped output (a tensor) is kept as it is, graph included, until
    the next forward overwrites it or `clear()` drops it. When a module runs more than once in a forward,
    its last output is kept. Reading an output that a later operation changed in place raises ValueError.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], *, role: str = "model"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(paths, str):
            raise TypeError(f"paths must be a collection of module paths, not the single string {paths!r}")
        self.model, self.role = model, role
        self.paths = tuple(dict.fromkeys(paths))  # unique, in order
        self.modules = {path: resolve_module(model, path, role=role) for path in self.paths}
        self.features: dict[str, Tensor] = {}
        self._versions: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> FeatureTaps:
        """Register the hooks (once; attaching again does nothing) and drop features caught earlier."""
        if not self._handles:
            self.clear()
            self._handles = [module.register_forward_hook(self._catcher(path)) for path, module in self.modules.items()]
        return self

    def detach(self) -> None:
        """Remove every hook this object registered; the features caught so far stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop the caught features (and the autograd graphs they hold)."""
        self.features.clear()
        self._versions.clear()

    def __getitem__(self, path: str) -> Tensor:
        if path not in self.features:
            if path not in self.modules:
                raise KeyError(f"{path!r} is not tapped; tapped paths: {', '.join(map(repr, self.paths))}")
            raise ValueError(
                f"{self.role} module {path!r} ({type(self.modules[path]).__name__}) did not run in the last forward"
                + ("" if self.attached else " with the taps attached")
            )
        feature = self.features[path]
        if path in self._versions and feature._version != self._versions[path]:
            raise ValueError(
                f"the output of {self.role} module {path!r} was changed in place after it was tapped (e.g. by a "
                "following ReLU(inplace=True)); tap the module that follows it, or make that operation not in-place"
            )
        return feature

    def __enter__(self) -> FeatureTaps:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def _catcher(self, path: str):
        def catch(module: nn.Module, inputs: tuple, output: object) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"{self.role} module {path!r} ({type(module).__name__}) returned {type(output).__name__}; "
                    "only modules that return one tensor can be tapped"
                )
            self.features[path] = output
            if not output.is_inference():  # inference-mode tensors have no version counter
                self._versions[path] = output._version

        return catch

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"FeatureTaps({type(self.model).__name__}, {list(self.paths)}, {state})"
