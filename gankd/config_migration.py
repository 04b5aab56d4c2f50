"""Migration of run configs written for gankd's earlier format, with a notice naming the new keys.

Earlier files chose loss terms with `distill.weights` and per-kind options in `distill` (output_kind,
feature_kind, attention_p, temperature, feature_pairs, lpips_net, lpips_weights), weighted a teacher's or
scratch run's adversarial term with `gan.weight` (its GAN loss in `gan.loss`), picked kernels with
`distill.impl`, and made a class-conditional discriminator conditional implicitly. They now live in one
place: `terms: {name: {weight: w, option: value}}`, `impl`, and `gan.conditional`.
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
# What a teacher or scratch run of each task trained on, besides the adversarial term, in the earlier format.
_EARLIER_BASE_TERMS = {"image2image": {"ground_truth": 1.0}, "classifier": {"ce": 1.0}, "generator": {}}
_EARLIER_GAN_WEIGHT = 1.0  # the earlier default of gan.weight


class ConfigMigrated(UserWarning):
    """A config written for gankd's earlier format was read and rewritten in the current one."""


def migrate(values: dict, source: str) -> list[str]:
    """Rewrite the earlier keys of a raw config dict in place; warn (ConfigMigrated) once with what changed.

    Returns the migrated keys ([] when the dict uses the current format only).
    """
    distill = values.get("distill") if isinstance(values.get("distill"), dict) else {}
    gan = values.get("gan") if isinstance(values.get("gan"), dict) else {}
    earlier = [f"distill.{key}" for key in ("weights", "feature_pairs", "impl", *_TERM_OPTIONS) if key in distill]
    earlier += [f"gan.{key}" for key in ("weight", "loss") if key in gan]
    if not earlier:
        return []
    terms = _earlier_terms(values, distill, gan)
    if terms is not None:
        values["terms"] = terms
    if "impl" in distill:
        values["impl"] = distill["impl"]
    for key in ("weights", "feature_pairs", "impl", *_TERM_OPTIONS):
        distill.pop(key, None)
    gan.pop("weight", None)
    gan.pop("loss", None)
    classes = ((gan.get("discriminator") or {}).get("options") or {}).get("num_classes", 0)
    if classes and "conditional" not in gan:  # the earlier trainer conditioned class-conditional discriminators
        gan["conditional"] = True
    rewritten = {key: values[key] for key in ("terms", "impl") if key in values}
    warnings.warn(
        f"{source} uses keys of gankd's earlier config format ({', '.join(earlier)}); read as "
        f"{yaml.safe_dump(rewritten, default_flow_style=True, sort_keys=False).strip()}"
        + (", gan.conditional: true" if gan.get("conditional") and classes else "")
        + ". Write the file in this form to silence this notice.",
        ConfigMigrated,
        stacklevel=3,
    )
    return earlier


def _earlier_terms(values: dict, distill: dict, gan: dict) -> dict | None:
    """The `terms` an earlier config meant, or None when it set none of the term keys."""
    adversarial_options = {"loss": gan["loss"]} if "loss" in gan else {}
    if "weights" in distill:
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
    if values.get("mode") == "distill" or values.get("terms"):
        # A GAN loss alone: it belongs to the adversarial term the config already has.
        terms = dict(values.get("terms") or {})
        if adversarial_options and "adversarial" in terms:
            earlier = terms["adversarial"]
            terms["adversarial"] = {
                **(earlier if isinstance(earlier, dict) else {"weight": earlier}),
                **adversarial_options,
            }
        return terms or None
    # A teacher or scratch run: its task's loss plus the adversarial term at gan.weight (earlier default 1).
    terms = dict(_EARLIER_BASE_TERMS.get(values.get("task", "generator"), {}))
    weight = gan.get("weight", _EARLIER_GAN_WEIGHT)
    if weight > 0:
        terms["adversarial"] = {"weight": weight, **adversarial_options} if adversarial_options else weight
    return terms
