"""Feature taps: the outputs of a model's submodules, caught by forward hooks by module path (no rewriting).

A tap path is a module path ("blocks.1", "" for the model itself), optionally followed by element selectors
for modules that return a tuple or list: "synthesis.b64[0]" is element 0 of what module synthesis.b64
returns (StyleGAN-style blocks return `(x, img)`), "block[1][0]" selects inside a nested tuple and
"block[-1]" counts from the end. Selectors are integers in brackets at the end of the path only; the
module part is resolved as a plain module path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

# A module path (no brackets) followed by zero or more integer selectors, e.g. "synthesis.b64[0]", "b[1][-1]".
_TAP_PATH = re.compile(r"(?P<module>[^\[\]]*)(?P<selectors>(?:\[-?\d+\])*)")
_TAP_FORM = "a module path optionally ending in integer element selectors, e.g. 'synthesis.b64[0]' or 'block[1][-1]'"


def resolve_module(model: nn.Module, path: str, *, role: str = "model") -> nn.Module:
    """The submodule of `model` at `path` ("" is the model itself, "blocks.1" its `blocks[1]`).

    `path` is a module path without element selectors (see `split_tap_path` for tap paths).
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


def split_tap_path(path: str, *, role: str = "model") -> tuple[str, tuple[int, ...]]:
    """A tap path's module path and element selectors: "synthesis.b64[0]" → ("synthesis.b64", (0,)).

    A path without selectors gives `(path, ())`. A malformed path ("b64[x]", "b64[0", "blocks[1].conv")
    raises ValueError naming it and the accepted form.
    """
    if not isinstance(path, str):
        raise TypeError(f"{role} tap path must be a str, got {type(path).__name__} {path!r}")
    match = _TAP_PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"{role} tap path {path!r} is malformed: a tap path is {_TAP_FORM}")
    selectors = tuple(int(index) for index in re.findall(r"-?\d+", match["selectors"]))
    return match["module"], selectors


def describe_output(value: object, *, nested: bool = False) -> str:
    """A one-line description of a module's output: "Tensor [4, 3, 8, 8]", "a tuple of 2: Tensor [...], ..."."""
    if isinstance(value, Tensor):
        return f"Tensor [{', '.join(map(str, value.shape))}]"
    if isinstance(value, (tuple, list)):
        kind = type(value).__name__
        if not value:
            return f"an empty {kind}"
        items = ", ".join(describe_output(item, nested=True) for item in value[:8])
        items += ", ..." if len(value) > 8 else ""
        return f"{kind} of {len(value)} ({items})" if nested else f"a {kind} of {len(value)}: {items}"
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _selector_text(selectors: Iterable[int]) -> str:
    return "".join(f"[{index}]" for index in selectors)


def _tensor_selectors(value: object, prefix: tuple[int, ...] = (), depth: int = 2) -> list[tuple[int, ...]]:
    """The selectors of the tensors inside a tuple/list output (nested up to `depth` levels), in order."""
    found = []
    if isinstance(value, (tuple, list)) and depth > 0:
        for index, item in enumerate(value):
            if isinstance(item, Tensor):
                found.append((*prefix, index))
            else:
                found.extend(_tensor_selectors(item, (*prefix, index), depth - 1))
    return found


class FeatureTaps:
    """Catches the outputs of `model`'s submodules at `paths` with forward hooks, without changing the model.

    Paths are checked at construction. The hooks exist only while attached: use it as a context manager,

        with FeatureTaps(model, ["blocks.1", "up"]) as taps:
            output = model(inputs)
        taps["blocks.1"]          # the output of model.blocks[1] in that forward (still readable after exit)

    or call `attach()` and `detach()`. Each tapped output (a tensor) is kept as it is, graph included, until
    the next forward overwrites it or `clear()` drops it. When a module runs more than once in a forward,
    its last output is kept. Reading an output that a later operation changed in place raises ValueError.

    A module that returns a tuple or list is tapped through an element selector at the end of the path:
    with `paths=["synthesis.b64[0]", "synthesis.b64[1]"]`, `taps["synthesis.b64[0]"]` is the first tensor
    the block returned and `taps["synthesis.b64[1]"]` the second (nested: "block[1][0]"; from the end:
    "block[-1]"). Features are keyed by the full path, selector included. A module whose output is not a
    tensor tapped without a selector, or a selector that does not lead to a tensor, raises ValueError in
    the forward, naming the path and what the module returned.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], *, role: str = "model"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{role} must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(paths, str):
            raise TypeError(f"paths must be a collection of module paths, not the single string {paths!r}")
        self.model, self.role = model, role
        self.paths = tuple(dict.fromkeys(paths))  # unique, in order
        self.modules: dict[str, nn.Module] = {}
        self._selections: dict[str, tuple[str, tuple[int, ...]]] = {}  # path -> (module path, selectors)
        for path in self.paths:
            module_path, selectors = split_tap_path(path, role=role)
            module = self.modules[path] = resolve_module(model, module_path, role=role)
            self._selections[path] = module_path, selectors
            if selectors and type(module).forward is nn.Module.forward:
                # A container such as ModuleList is never called: "blocks[1]" was meant as "blocks.1".
                dotted = ".".join(part for part in (module_path, str(selectors[0])) if part)
                raise ValueError(
                    f"{role} tap path {path!r}: module {module_path!r} ({type(module).__name__}) is never called, "
                    f"so it has no output to select from; its submodules are tapped by dotted module paths, "
                    f"e.g. {dotted!r}"
                )
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
            feature = self._select(path, module, output)
            self.features[path] = feature
            if not feature.is_inference():  # inference-mode tensors have no version counter
                self._versions[path] = feature._version

        return catch

    def _select(self, path: str, module: nn.Module, output: object) -> Tensor:
        """The tensor that `path` picks from `module`'s output, or a one-line ValueError saying why there is none."""
        module_path, selectors = self._selections[path]
        returned = f"module {module_path!r} ({type(module).__name__}) returned {describe_output(output)}"
        if not selectors:
            if isinstance(output, Tensor):
                return output
            # Suggest the selectors that lead to tensors, the first one spelled out.
            candidates = _tensor_selectors(output)
            if not candidates:
                raise ValueError(f"{self.role} {returned}; only a tensor can be tapped, and it holds none")
            first = candidates[0]
            which = "the first element" if first == (0,) else f"element {_selector_text(first)}"
            others = ", ".join(repr(path + _selector_text(other)) for other in candidates[1:4])
            raise ValueError(
                f"{self.role} {returned}; only a tensor can be tapped: tap {path + _selector_text(first)!r} to take "
                f"{which}" + (f" (other tensors: {others})" if others else "")
            )
        failed = f"{self.role} tap {path!r}: {returned}"
        value = output
        for depth, index in enumerate(selectors):
            taken = module_path + _selector_text(selectors[:depth])
            if not isinstance(value, (tuple, list)):
                what = "that" if depth == 0 else f"{taken!r} is {describe_output(value)}, which"
                hint = f"; tap {taken!r} for the tensor itself" if isinstance(value, Tensor) else ""
                if depth == 0 and str(index) in dict(module.named_children()):
                    hint += f", or {'.'.join(part for part in (module_path, str(index)) if part)!r} for its submodule"
                raise ValueError(f"{failed}; {what} is not a tuple or list, so [{index}] cannot select from it{hint}")
            if not -len(value) <= index < len(value):
                raise ValueError(f"{failed}; index {index} is out of range for {taken!r}, which has {len(value)} "
                                 "elements")  # fmt: skip
            value = value[index]
        if not isinstance(value, Tensor):
            raise ValueError(f"{failed}; {path!r} is {describe_output(value)}, not a tensor, and only a tensor can "
                             "be tapped")  # fmt: skip
        return value

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"FeatureTaps({type(self.model).__name__}, {list(self.paths)}, {state})"
