"""The markdown summary of an eval_expressions.json (what ``lordfx eval-expressions`` prints)."""

from __future__ import annotations

from typing import Any


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def summary_markdown(r: dict[str, Any]) -> str:
    """A short markdown summary of one eval_expressions.json (for stdout)."""
    real, clf, tr = r["real_test"], r["classifier"], r["translation"]
    held = "held-out performers" if real.get("data", {}).get("reader") == "taiwanese" else None
    test_name = f"real {held}" if held else "real FER2013 test"
    ch = real["chance"]
    chance = f"{ch['uniform']:.3f} / {_f(ch['majority'])} ({ch['majority_class']})"
    lines = [
        f"## eval-expressions: {r['run']}",
        "",
        "| measure | value | n | chance (1/7 / majority) |",
        "|---|---|---|---|",
        f"| classifier, val (acc / balanced) | {_f(clf['val_accuracy'])} / "
        f"{_f(clf['val_balanced_accuracy'])} | {clf['num_val']} | |",
        f"| classifier, {test_name} (acc / balanced) | {_f(real['accuracy'])} / "
        f"{_f(real['balanced_accuracy'])} | {real['n']} | {chance} |",
    ]
    for key in (k for k in tr if k.startswith("strength_")):
        t = tr[key]
        lines.append(
            f"| translation {key.replace('_', ' ')} (mean / other sources) | "
            f"{_f(t['mean_accuracy'])} / {_f(t['mean_accuracy_other_sources'])} | "
            f"{t['n_images']} imgs × {len(t['per_target'])} | {t['chance']:.3f} |"
        )
    rec = tr["reconstruction"]
    lines.append(
        f"| reconstruction keeps the expression (acc) | {_f(rec['accuracy'])} | {rec['n']} | "
        f"{rec['chance']['uniform']:.3f} / {_f(rec['chance']['majority'])} |"
    )
    for part, leak in r["leakage"].items():
        if "skipped" in leak:
            lines.append(f"| leakage y←c {part} | skipped: {leak['skipped']} | | |")
            continue
        lo, mlp = leak["logistic"], leak["mlp"]
        lines.append(
            f"| {_probe_label(part)} (logistic / mlp) | {_f(lo['accuracy'])} / "
            f"{_f(mlp['accuracy'])} | {lo['num_test']} | {leak['chance_uniform']:.3f} / "
            f"{_f(lo['chance'])} |"
        )
    lines += _identity_lines(r.get("identity") or {})
    lines += _yale_lines(r["yale"])
    if "photo_sheet" in r.get("figures", {}):
        lines.append(f"| photo contact sheet | {r['figures']['photo_sheet']} | | |")
    lines += ["", _per_target_table(r)]
    return "\n".join(lines)


def _identity_lines(ident: dict[str, Any]) -> list[str]:
    if "overall" not in ident:
        return [f"| identity kept (dlib < 0.6) | skipped: {ident.get('skipped', '–')} | | |"]
    o, same = ident["overall"], ident["reference_same_person_real"] or {}
    other = ident["reference_other_person_real"]
    return [
        f"| identity kept, translations s=1 (dlib < 0.6) | {_f(o['share'])} | {o['n']} | |",
        f"| identity reference: real same person / other person | {_f(same.get('share'))} / "
        f"{_f(other['share'])} | {same.get('n', 0)} / {other['n']} | |",
    ]


def _yale_lines(y: dict[str, Any]) -> list[str]:
    if "skipped" in y and "real" not in y:
        return [f"| Yale | skipped: {y['skipped']} | | |"]
    d, real, t = y["detection"], y["real"], y["translation"]
    return [
        f"| Yale real crops, 4 labelled conditions (acc / balanced) | {_f(real['accuracy'])} / "
        f"{_f(real['balanced_accuracy'])} | {real['n']} | {real['chance']['uniform']:.3f} / "
        f"{_f(real['chance']['majority'])} |",
        f"| Yale translation (mean / other sources) | {_f(t['mean_accuracy'])} / "
        f"{_f(t['mean_accuracy_other_sources'])} | {t['n_images']} crops × "
        f"{len(t['per_target'])} | {t['chance']:.3f} |",
        f"| Yale face detection failed | {d['num_failed']} of {d['num_files']} | | |",
    ]


def _per_target_table(r: dict[str, Any]) -> str:
    tr, yale = r["translation"], r["yale"].get("translation")
    strengths = [k for k in tr if k.startswith("strength_")]
    head = ["target", *(f"{k.replace('strength_', 's=')} (other src)" for k in strengths)]
    ident = (r.get("identity") or {}).get("per_target")
    head += ["copy input (other src)", "real test recall"] + (["Yale s=1"] if yale else [])
    head += ["identity kept s=1"] if ident else []
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in r["bundle"]["class_names"]:
        cells = [name]
        for k in strengths:
            t = tr[k]["per_target"][name]
            cells.append(f"{_f(t['accuracy'])} ({_f(t['accuracy_other_sources'])})")
        c = tr["copy_input"][name]
        cells.append(f"{_f(c['rate'])} ({_f(c['rate_other_sources'])})")
        cells.append(_f(r["real_test"]["per_class"][name]["accuracy"]))
        if yale:
            cells.append(_f(yale["per_target"][name]["accuracy"]))
        if ident:
            cells.append(_f(ident[name]["share"]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _probe_label(part: str) -> str:
    if part.endswith("_class_code"):
        return f"control: y from class code, {part.removesuffix('_class_code')}"
    return f"leakage y←c {part}"
