"""The report's section on sampling levers, written from a temperature/guidance sweep's record.

`python -m pcnn.temperature_sweep` writes `levers.tex` beside its `sweep.json` and grids; the report
includes it when the committed figures hold one (`figures/sampling_levers/`), so its numbers come from the
record and nothing is typed by hand. A build without that folder prints no such section.
`python -m pcnn.reporting.levers FOLDER` writes it again from the folder's `sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pcnn.evaluation.paired import PairingError, compare_sweeps
from pcnn.reporting.report import tex_escape


def _pct(value: float | None) -> str:
    return "--" if value is None else f"{100 * value:.1f}"


def _spread(values: list[float | None]) -> str:
    """A share over judge seeds: the first judge's value, with the range over all judges when several."""
    known = [v for v in values if v is not None]
    if not known:
        return "--"
    if len(known) == 1:
        return _pct(known[0])
    return f"{_pct(known[0])} ({_pct(min(known))}--{_pct(max(known))})"


def grid_name(temperature: float, guidance: float) -> str:
    """The sweep's sample grid of one setting (`samples_T1.png`, `samples_T1_w2.png`): the sweep writes it,
    the section includes it."""
    return f"samples_T{temperature:g}" + (f"_w{guidance:g}" if guidance else "") + ".png"


def _setting(key: str, setting: Mapping[str, Any]) -> tuple[float, float]:
    """(temperature, guidance) of a sweep entry; records from before guidance hold only the key."""
    return setting.get("temperature", float(key.split("_")[0])), setting.get("guidance", 0.0)


def _row(key: str, setting: Mapping[str, Any], classes: list[str]) -> str:
    seeds = setting.get("judge_seeds")
    low, high = setting["overall_ci95"]
    judges = f"{_pct(min(seeds['overall']))}--{_pct(max(seeds['overall']))}" if seeds else "--"
    per_class = [
        _spread(seeds["per_class"][name]) if seeds else _pct(setting["per_class"][name]) for name in classes
    ]
    own = setting.get("own_classifier")
    fid = setting.get("matched_fid")
    temperature, guidance = _setting(key, setting)
    cells = [
        f"{temperature:g}",
        f"{guidance:g}",
        f"{_pct(setting['overall'])} [{_pct(low)}, {_pct(high)}]",
        judges,
        *per_class,
        _pct(own["overall"]) if own else "--",
        f"{fid['model']:.1f} ({fid['floor']:.1f})" if fid else "--",
    ]
    return "    " + " & ".join(cells) + r" \\"


def _comparison(settings: Mapping[str, Any], plain: str, guided: str) -> str:
    """One sentence setting a guided row beside the unguided one at the same temperature."""
    a, b = settings[plain], settings[guided]
    parts = [
        f"the first judge puts {_pct(b['overall'])}\\pct{{}} of the samples in their class "
        f"({_pct(a['overall'])}\\pct{{}} without guidance)"
    ]
    if "own_classifier" in a and "own_classifier" in b:
        parts.append(
            f"the model's own classifier {_pct(b['own_classifier']['overall'])}\\pct{{}} "
            f"({_pct(a['own_classifier']['overall'])}\\pct)"
        )
    if "matched_fid" in a and "matched_fid" in b:
        parts.append(f"the matched FID is {b['matched_fid']['model']:.1f} ({a['matched_fid']['model']:.1f})")
    sentence = f"At $w = {b['guidance']:g}$ " + ", ".join(parts) + "."
    own = a.get("own_classifier", {}).get("overall")
    if own is not None and own >= 0.95 and a["overall"] < own - 0.2:
        sentence += (
            f" Unguided, the model's own classifier already puts {_pct(own)}\\pct{{}} of its samples in their"
            " class, so guidance has little left to strengthen: what makes a sample of a class for the model"
            " (its colours and textures) is not what makes it one for the judge."
        )
    return sentence


def _temperature_sentence(record: Mapping[str, Any]) -> str:
    """Every unguided temperature set beside T = 1, paired sample by sample where the record allows it."""
    settings = record["temperatures"]
    plain = {_setting(k, v)[0]: k for k, v in settings.items() if not _setting(k, v)[1]}
    if 1.0 not in plain or len(plain) < 2:
        return ""
    base = settings[plain[1.0]]

    def fid(setting: Mapping[str, Any]) -> str:
        return f", matched FID {setting['matched_fid']['model']:.1f}" if "matched_fid" in setting else ""

    parts = []
    for temperature, key in plain.items():
        if temperature == 1.0:
            continue
        part = rf"$T = {temperature:g}$: {_pct(settings[key]['overall'])}\pct{{}}"
        try:
            paired = compare_sweeps(record, record, key, plain[1.0])
            low, high = (100 * v for v in paired["difference_ci95"])
            difference = 100 * paired["difference"]
            part += rf" ({difference:+.1f} points, paired 95\pct{{}} interval [{low:+.1f}, {high:+.1f}])"
        except PairingError:
            pass
        parts.append(part + fid(settings[key]))
    sentence = (
        rf"Against $T = 1$, the model's own distribution ({_pct(base['overall'])}\pct{{}} judged in class"
        f"{fid(base)}), the other temperatures give " + "; ".join(parts) + "."
    )
    if all("judge_predictions" in settings[k] for k in plain.values()):
        sentence += (
            " Each sample is paired with the one drawn from the same random numbers at $T = 1$"
            " (\\texttt{python -m pcnn.paired})."
        )
    best_judged = max(plain, key=lambda t: settings[plain[t]]["overall"])
    sentence += f" The judged share is highest at $T = {best_judged:g}$"
    best_fid = _lowest_fid(settings, plain.values())
    if best_fid is not None:
        sentence += f", the matched FID lowest at $T = {_setting(best_fid, settings[best_fid])[0]:g}$"
    sentence += "."
    return sentence + (
        " Judge and FID look at training images only, so a temperature chosen here is not selected on"
        " validation."
    )


def _lowest_fid(settings: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    """The key among `keys` with the lowest matched FID; None when none of them was scored."""
    scored = [k for k in keys if "matched_fid" in settings[k]]
    return min(scored, key=lambda k: settings[k]["matched_fid"]["model"]) if scored else None


def _shown(settings: Mapping[str, Any]) -> str:
    """The setting whose grid the section shows: the last guided one, else the lowest matched FID."""
    guided = [k for k, s in settings.items() if s.get("guidance")]
    if guided:
        return guided[-1]
    return _lowest_fid(settings, settings) or next(iter(settings))


def levers_tex(record: Mapping[str, Any], folder: str) -> str:
    """A LaTeX paragraph, table and figure of the sweep `record`, whose grids lie in `folder` (relative to
    the figures folder)."""
    settings = record["temperatures"]
    first = next(iter(settings.values()))
    classes = list(first["per_class"])
    judges = record.get("judges", [record["judge"]])
    judge_acc = ", ".join(f"{100 * j['accuracy']:.1f}" for j in judges)
    judged_by = (
        f"baseline CNN judges trained with different seeds put in their class (their validation accuracies:"
        f" {judge_acc}\\pct)"
        if len(judges) > 1
        else f"the baseline CNN judge puts in their class ({judge_acc}\\pct{{}} on validation)"
    )
    guided = [k for k, s in settings.items() if s.get("guidance")]
    shown = _shown(settings)
    temperature, guidance = _setting(shown, settings[shown])
    label = folder.replace("/", "-")
    grid = f"{folder}/{grid_name(temperature, guidance)}"
    header = " & ".join(
        [
            "$T$",
            "$w$",
            r"judged in class \%",
            "all judges",
            *[tex_escape(c) for c in classes],
            r"own \%",
            "FID (floor)",
        ]
    )
    rows = "\n".join(_row(key, settings[key], classes) for key in settings)
    checkpoint = tex_escape(record["checkpoint"])
    plain = [k for k, v in settings.items() if _setting(k, v) == (temperature, 0.0)]
    comparison = _comparison(settings, plain[0], shown) if guided and plain else ""
    comparison = " ".join(part for part in (_temperature_sentence(record), comparison) if part)
    return rf"""\paragraph{{Sampling levers.}} Measured after the build on \texttt{{{checkpoint}}}
with \texttt{{python -m pcnn.temperature\_sweep}} ({first["n"]} samples per setting, generator seed
{record["seed"]}): the sampling temperature $T$ and the self-guidance weight $w$, with which the model's
own Bayes classifier steers its sampler, drawing each sub-pixel from
$q(v) \propto p(v \mid x_{{<i}}, c)^{{1+w}} / p(v \mid x_{{<i}})^{{w}}$, where the class-free
$p(v \mid x_{{<i}})$ is the mixture of the class-conditionals under the running posterior ($w = 0$ is
the model's own distribution; $w > 0$ is not). Table~\ref{{tab:levers-{label}}} gives the share of
samples that {judged_by}, the share the model's own classifier puts there, and the matched-protocol FID;
Figure~\ref{{fig:levers-{label}}} shows samples at $T = {temperature:g}$, $w = {guidance:g}$. {comparison}

\begin{{table}}[htbp]
  \centering\footnotesize\setlength{{\tabcolsep}}{{3pt}}
  \caption{{Sampling levers on \texttt{{{checkpoint}}}. Judged in class: the first judge's share with
  its bootstrap 95\pct{{}} interval, and the range over all judges; per class: the first judge's share
  and, in parentheses, the range over all judges. Own: the model's Bayes classifier on its own samples.
  FID: matched protocol, with the real-data floor.}}
  \label{{tab:levers-{label}}}
  \resizebox{{\linewidth}}{{!}}{{\begin{{tabular}}{{{"r" * (6 + len(classes))}}}
    \hline
    {header} \\
    \hline
{rows}
    \hline
  \end{{tabular}}}}
\end{{table}}

\begin{{figure}}[htbp]
  \centering
  \includegraphics[width=0.8\linewidth,height=0.28\textheight,keepaspectratio]{{{grid}}}
  \caption{{Samples of \texttt{{{checkpoint}}} at $T = {temperature:g}$, $w = {guidance:g}$, one row
  per class.}}
  \label{{fig:levers-{label}}}
\end{{figure}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pcnn.reporting.levers",
        description="Rewrite a sweep folder's levers.tex from its sweep.json.",
    )
    parser.add_argument("folder", help="a folder written by python -m pcnn.temperature_sweep --out")
    folder = Path(parser.parse_args(argv).folder)
    record_path = folder / "sweep.json"
    if not record_path.is_file():
        print(
            f"error: {record_path} not found: run python -m pcnn.temperature_sweep --out {folder}",
            file=sys.stderr,
        )
        return 2
    out = folder / "levers.tex"
    out.write_text(levers_tex(json.loads(record_path.read_text()), folder.resolve().name))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
