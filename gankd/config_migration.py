"""Migration of run configs written for gankd's earlier format, with a notice naming the new keys.

Earlier files chose a distillation's loss terms with `distill.weights` and per-kind options in `distill`
(output_kind, feature_kind, attention_p, temperature, feature_pairs, lpips_net, lpips_weights), weighted a
teacher's or scratch run's adversarial term with `gan.weight` (its GAN loss in `gan.loss`), picked kernels
with `distill.impl`, and made a class-conditional discriminator conditional implicitly. They now live in
one place: `terms: {name: {weight: w, option: value}}`, `impl`, and `gan.conditional`.
"""

from __future__ import annotations

import warnings

import yaml

# Earlier distill.* option -> (term it belongs to, that term's option name).
_TERM_OPTIONS = {
    "output_kind": ("output", "kind"),
    "feature_kind": ("feature", "kind"),
    "attention_p": ("attention", "p"),
    "temperature": ("kd", "temperature"),
    "lpips_net": ("lpips", "net"),
    "lpips_weights": ("lpips", "weights_path"),
}
_FEATURE_TERMS = ("feature", "adapted", "attention")
# The earlier format's fixed meaning of a teacher or scratch run, per task: its own loss, and whether it
# also trained the adversarial term at gan.weight (default 1). A record of history, not a current default.
_EARLIER_RUNS = {
    "generator": ({}, True),
    "image2image": ({"ground_truth": 1.0}, True),
    "classifier": ({"ce": 1.0}, False),
}
_EARLIER_GAN_WEIGHT = 1.0


class ConfigMigrated(UserWarning):
    """A config written for gankd's earlier format was read and rewritten in the current one."""


def migrate(values: dict, source: str) -> None:
    """Rewrite the earlier keys of a raw config dict in place, and warn (ConfigMigrated) with what changed.

    Raises ValueError when an earlier config leaves a run without any loss term (the earlier format
    refused such a run too).
    """
    distill = values.get("distill") if isinstance(values.get("distill"), dict) else {}
    gan = values.get("gan") if isinstance(values.get("gan"), dict) else {}
    earlier = [f"distill.{key}" for key in ("weights", "feature_pairs", "impl", *_TERM_OPTIONS) if key in distill]
    earlier += [f"gan.{key}" for key in ("weight", "loss") if key in gan]
    if not earlier:
        return
    rewritten = {}
    terms = _earlier_terms(values, distill, gan)
    if terms is not None:
        if not terms:
            raise ValueError(f"{source}: {', '.join(earlier)} leave this {values.get('mode', 'teacher')} run "
                             "without a loss term; name its terms, e.g. terms: {adversarial: 1.0}")  # fmt: skip
        values["terms"] = rewritten["terms"] = terms
    if "impl" in distill:
        values["impl"] = rewritten["impl"] = distill["impl"]
    for key in ("weights", "feature_pairs", "impl", *_TERM_OPTIONS):
        distill.pop(key, None)
    gan.pop("weight", None)
    gan.pop("loss", None)
    classes = ((gan.get("discriminator") or {}).get("options") or {}).get("num_classes", 0)
    if classes and "conditional" not in gan:  # the earlier trainer conditioned class-conditional discriminators
        gan["conditional"] = True
        rewritten["gan"] = {"conditional": True}
    shown = yaml.safe_dump(rewritten, default_flow_style=True, sort_keys=False).strip() if rewritten else "nothing"
    warnings.warn(
        f"{source}: keys of gankd's earlier config format ({', '.join(earlier)}) are read as {shown}; write them in "
        "this form to silence this notice",
        ConfigMigrated,
        stacklevel=3,
    )


def _earlier_terms(values: dict, distill: dict, gan: dict) -> dict | None:
    """The `terms` an earlier config meant, or None when its earlier keys leave the terms as they are."""
    adversarial_options = {"loss": gan["loss"]} if "loss" in gan else {}
    if values.get("mode") == "distill":
        if not distill.get("weights"):  # only gan.loss (or distill.impl): a distillation keeps its terms
            return _with_adversarial(values.get("terms") or {}, adversarial_options) or None
        terms = {}
        for name, weight in distill["weights"].items():
            spec = {"weight": weight}
            for key, (term, option) in _TERM_OPTIONS.items():
                if term == name and key in distill:
                    spec[option] = distill[key]
            if name in _FEATURE_TERMS and "feature_pairs" in distill:
                spec["pairs"] = distill["feature_pairs"]
            if name == "adversarial":
                spec.update(adversarial_options)
            terms[name] = spec if len(spec) > 1 else weight
        return terms
    # A teacher or scratch run: distill.* meant nothing to it; gan.weight weighted its adversarial term.
    if "weight" not in gan and "loss" not in gan:
        return None
    if values.get("terms"):  # current terms with an earlier gan key (an old --set, say): that term's weight
        terms = _with_adversarial(values["terms"], adversarial_options)
        if "weight" in gan:
            spec = terms.pop("adversarial", {})
            if gan["weight"] > 0:
                terms["adversarial"] = {**(spec if isinstance(spec, dict) else {}), **adversarial_options,
                                        "weight": gan["weight"]}  # fmt: skip
        return terms
    own_terms, adversarial = _EARLIER_RUNS.get(values.get("task", "generator"), ({}, False))
    terms = dict(own_terms)
    weight = gan.get("weight", _EARLIER_GAN_WEIGHT)
    if adversarial and weight > 0:
        terms["adversarial"] = {"weight": weight, **adversarial_options} if adversarial_options else weight
    return terms


def _with_adversarial(terms: dict, options: dict) -> dict:
    """`terms` with `options` (an earlier gan.loss) added to its adversarial term, when it has one."""
    terms = dict(terms)
    if options and "adversarial" in terms:
        spec = terms["adversarial"]
        terms["adversarial"] = {**(spec if isinstance(spec, dict) else {"weight": spec}), **options}
    return terms
