"""The ``vmalab`` command line: run, diff, maps and demo."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .execute import ModelUnsupported, run_on_model
from .scenario import ScenarioError, compare_results, load_scenario, parse_scenario, vma_line


class CliError(click.ClickException):
    """A one-line error: printed as ``vmalab: error: ...`` with exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"vmalab: error: {self.message}", err=True)


def _fmt_args(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items() if k != "body")


def print_result(result: dict[str, Any], out: Any = None) -> None:
    """Print a result object for a person: one line per op, snapshots as VMA lines."""
    w = out or sys.stdout
    env = result.get("env", {})
    print(f"# {result.get('name')}  ({env.get('kernel', '?')}, window={env.get('window')})", file=w)
    for i, r in enumerate(result["results"]):
        if r.get("errno"):
            ret = f"-1 {r['errno']}"
        elif r.get("signal"):
            ret = f"-1 {r['signal']}"
        elif "vmas" in r and "ret" not in r:
            ret = f"{len(r['vmas'])} VMAs"
        else:
            ret = str(r.get("ret"))
        extra = ""
        if "value" in r:
            extra += f" value={r['value']}"
        if "vec" in r:
            extra += f" vec={r['vec']}"
        if r.get("failed_at") is not None:
            extra += f" failed_at={r['failed_at']}"
        note = f"   # {r['note']}" if r.get("note") else ""
        print(f"{i:3d} {r['op']:<10} {_fmt_args(r.get('args', {}))} -> {ret}{extra}{note}", file=w)
        for v in r.get("vmas", []) or []:
            print(f"      {vma_line(v)}", file=w)
        if r.get("child"):
            for v in r["child"].get("vmas", []):
                print(f"      child: {vma_line(v)}", file=w)
            for rd in r["child"].get("reads", []):
                print(f"      child read {rd}", file=w)


def _load(path: str) -> Any:
    try:
        return load_scenario(path)
    except ScenarioError as e:
        raise CliError(str(e)) from None


def _kernel_run(scn: Any) -> dict[str, Any]:
    try:
        from .oracle.kernel import KernelRunnerError, run_on_kernel
    except ImportError as e:  # pragma: no cover
        raise CliError(f"live-kernel runner unavailable: {e}") from None
    try:
        return run_on_kernel(scn)
    except KernelRunnerError as e:
        raise CliError(f"live kernel: {e}") from None


def _model_run(scn: Any, initial_maps: str | None = None, trace: bool = False) -> dict[str, Any]:
    try:
        return run_on_model(scn, initial_maps=initial_maps, validate=True, trace=trace)
    except ModelUnsupported as e:
        raise CliError(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmalab")
def main() -> None:
    """vmalab: an executable, Linux-faithful model of a process address space."""


def _profile_option(f: Any) -> Any:
    from .profiles import PROFILES
    return click.option("--kernel-profile", "profile", type=click.Choice(list(PROFILES)), default=None,
                        help="Kernel profile of the model (default: the scenario's kernel_profile, else 6.18).")(f)


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result object of the scenario format.")
@click.option("--kernel", is_flag=True, help="Run on this machine's live kernel instead of the model.")
@click.option("--trace", is_flag=True, help="Print the model's trace events after the results.")
@click.option("--all-profiles", is_flag=True, help="Run on the model under every kernel profile and show how "
              "the outcome changes.")
@_profile_option
def run(scenario: str, as_json: bool, kernel: bool, trace: bool, all_profiles: bool, profile: str | None) -> None:
    """Run SCENARIO.json on the model (or, with --kernel, on the live kernel)."""
    scn = _load(scenario)
    if all_profiles:
        _run_all_profiles(scn, as_json, trace)
        return
    if kernel:
        result = _kernel_run(scn)
    else:
        from .execute import ModelRunner, check_supported
        try:
            check_supported(scn)
            runner = ModelRunner(scn, validate=True, trace=trace, kernel=profile)
            result = runner.run()
        except ModelUnsupported as e:
            raise CliError(str(e)) from None
    if as_json:
        result.get("env", {}).pop("initial_maps", None) if not kernel else None
        click.echo(json.dumps(result, indent=1))
        return
    print_result(result)
    if not kernel:
        from .procfs import maps
        click.echo("# final /proc/self/maps (model)")
        click.echo(maps(runner.mm), nl=False)
        if trace:
            click.echo("# trace")
            for ev in runner.mm.trace:
                click.echo(f"  {ev}")


def _run_all_profiles(scn: Any, as_json: bool, trace: bool) -> None:
    """Run a scenario under every profile; print each op's outcome per profile, and the trace if asked."""
    from .driver import ProfileFeatureError
    from .execute import ModelRunner, check_supported
    from .profiles import PROFILES
    try:
        check_supported(scn)
    except ModelUnsupported as e:
        raise CliError(str(e)) from None
    outcomes: dict[str, Any] = {}
    traces: dict[str, list[str]] = {}
    for name in PROFILES:
        try:
            runner = ModelRunner(scn, validate=True, trace=trace, kernel=name)
            outcomes[name] = runner.run()
            traces[name] = [str(ev) for ev in runner.mm.trace]
        except ProfileFeatureError as e:
            outcomes[name] = {"unavailable": str(e)}
        except ModelUnsupported as e:
            outcomes[name] = {"unavailable": str(e)}
    if as_json:
        click.echo(json.dumps(outcomes, indent=1))
        return
    from .execute import summarize_result
    summaries = {name: summarize_result(res) for name, res in outcomes.items() if "unavailable" not in res}
    nops = max((len(v) for v in summaries.values()), default=0)
    differing = [i for i in range(nops) if len({tuple(v[i:i + 1]) for v in summaries.values()}) > 1]
    for name, res in outcomes.items():
        click.echo(f"== kernel profile {name}")
        if "unavailable" in res:
            click.echo(f"   not available: {res['unavailable']}")
            continue
        for i, line in enumerate(summarize_result(res)):
            click.echo(f" {'*' if i in differing else ' '} {line}")
        if trace:
            for ev in traces[name]:
                click.echo(f"     trace: {ev}")
    unavailable = [n for n, r in outcomes.items() if "unavailable" in r]
    click.echo(f"== ops whose outcome differs across profiles (*): {', '.join(map(str, differing)) or 'none'}"
               + (f"; not available under: {', '.join(unavailable)}" if unavailable else ""))


@main.command()
def profiles() -> None:
    """List the kernel profiles and what each has."""
    from .profiles import PROFILES
    for name, p in PROFILES.items():
        click.echo(f"{name:<8} {p.summary}")
        feats = p.features()
        on = [k for k, v in feats.items() if v is True]
        click.echo(f"         {', '.join(on) or '-'}; actions: {', '.join(feats['action_types']) or '-'}")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--expected", type=click.Path(dir_okay=False),
              help="Compare with a recorded kernel result instead of running the live kernel.")
def diff(scenario: str, as_json: bool, expected: str | None) -> None:
    """Run SCENARIO.json on the live kernel and on the model; exit 1 on any divergence."""
    scn = _load(scenario)
    if expected:
        try:
            with open(expected, encoding="utf-8") as f:
                kres = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CliError(f"{expected}: {e}") from None
    else:
        kres = _kernel_run(scn)
    mres = _model_run(scn, initial_maps=kres.get("env", {}).get("initial_maps"))
    diffs = compare_results(kres, mres)
    if as_json:
        click.echo(json.dumps({"name": scn.name, "agree": not diffs, "differences": diffs}, indent=1))
    else:
        if diffs:
            click.echo(f"{scn.name}: DIVERGES ({len(diffs)} differences)")
            for d in diffs[:10]:
                click.echo(f"  {d}")
            side_by_side(kres, mres)
        else:
            click.echo(f"{scn.name}: agrees ({len(kres['results'])} ops)")
    if diffs:
        sys.exit(1)


def first_divergence(kres: dict[str, Any], mres: dict[str, Any]) -> int | None:
    """The index of the first op whose results differ (as compare_results judges them), if any."""
    for i, (k, m) in enumerate(zip(kres["results"], mres["results"], strict=False)):
        if compare_results({"results": [k], "env": kres.get("env", {})},
                           {"results": [m], "env": mres.get("env", {})}):
            return i
    return None


def side_by_side(kres: dict[str, Any], mres: dict[str, Any], width: int = 60) -> None:
    """Print the first diverging op with the kernel's and the model's results in two columns, with the
    maps lines of a snapshot."""
    i = first_divergence(kres, mres)
    if i is None:
        return
    k, m = kres["results"][i], mres["results"][i]

    def lines(r: dict[str, Any]) -> list[str]:
        out = [f"ret={r.get('ret')} errno={r.get('errno')}" + (f" signal={r['signal']}" if r.get("signal") else "")
               + (f" value={r['value']}" if "value" in r else "") + (f" vec={r['vec']}" if "vec" in r else "")]
        for v in r.get("vmas", []) or []:
            out.append(f"{v.get('start')}-{v.get('end')} {v.get('perms')} {v.get('name') or ''}".rstrip())
            out.append(f"  rss={v.get('rss_kb')}K [{v.get('vmflags')}]")
        return out

    click.echo(f"\nfirst divergence: op {i} ({k.get('op')} {_fmt_args(k.get('args', {}))})")
    left, right = lines(k), lines(m)
    click.echo(f"  {'kernel (expected)':<{width}} | model (got)")
    for j in range(max(len(left), len(right))):
        a = left[j] if j < len(left) else ""
        b = right[j] if j < len(right) else ""
        mark = " " if a == b else "*"
        click.echo(f"{mark} {a:<{width}} | {b}")


@main.command()
@click.argument("scenarios", type=click.Path(dir_okay=False), nargs=-1, required=True)
def record(scenarios: tuple[str, ...]) -> None:
    """Run each SCENARIO.json on the live kernel and write NAME.kernel.json beside it."""
    for path in scenarios:
        scn = _load(path)
        res = _kernel_run(scn)
        out = recording_path(path)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        click.echo(f"recorded {out} ({res.get('env', {}).get('kernel')})")


def recording_path(scenario_path: str) -> str:
    """Where the kernel's recorded result of a scenario lives: NAME.kernel.json beside NAME.json."""
    base = scenario_path[:-5] if scenario_path.endswith(".json") else scenario_path
    return base + ".kernel.json"


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False), required=False)
@click.option("--smaps", is_flag=True, help="Print smaps instead of maps.")
def maps(scenario: str | None, smaps: bool) -> None:
    """Print the model's /proc/self/maps after SCENARIO.json (or of a fresh process)."""
    from .execute import ModelRunner, check_supported
    from .procfs import maps as maps_text
    from .procfs import smaps as smaps_text
    scn = _load(scenario) if scenario else parse_scenario({"name": "fresh", "ops": []})
    try:
        check_supported(scn)
        runner = ModelRunner(scn, validate=True)
        runner.run()
    except ModelUnsupported as e:
        raise CliError(str(e)) from None
    click.echo((smaps_text if smaps else maps_text)(runner.mm), nl=False)


@main.command()
def demo() -> None:
    """A guided tour: placement, a split, a merge, an anon_vma that blocks a merge, and errnos."""
    from .demo import run_demo
    run_demo()


@main.command()
@click.option("--seed", type=int, default=0, show_default=True, help="The run's seed: case I is a function of it.")
@click.option("--cases", type=click.IntRange(min=0), default=100, show_default=True, help="Number of cases.")
@click.option("--ops", "nops", type=click.IntRange(min=1), default=12, show_default=True, help="Ops per case.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Worker processes [default: all cores].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="fuzz-failures", show_default=True,
              help="Where diverging cases are written (shrunk scenario, both results, original).")
@click.option("--ops-filter", "ops_filter", multiple=True,
              help="Op kinds: 'mmap,mprotect' keeps only those (plus mmap and snapshot), '-mremap' drops one.")
@click.option("--no-shrink", is_flag=True, help="Write diverging cases as generated.")
def fuzz(seed: int, cases: int, nops: int, jobs: int | None, out_dir: str, ops_filter: tuple[str, ...],
         no_shrink: bool) -> None:
    """Random scenarios on the live kernel and on the model; diverging cases are shrunk and written to --out.

    Prints 'N cases, N agree, N diverge' and exits 1 if any case diverges (or cannot be run)."""
    from .oracle.fuzz import FuzzConfig, run_fuzz, write_failure
    from .oracle.kernel import KernelRunnerError
    try:
        config = FuzzConfig.from_filter(nops, ops_filter, shrink=not no_shrink)
    except ValueError as e:
        raise CliError(str(e)) from None
    with click.progressbar(length=cases, label=f"fuzz seed {seed}", file=sys.stderr) as bar:
        def on_outcome(o: Any) -> None:
            bar.update(1)
            if o.status == "diverge":
                paths = write_failure(out_dir, o)
                noise = " (kernel noise)" if o.noise else ""
                click.echo(f"\n{o.name}: DIVERGES{noise}, shrunk {o.nops} -> {len((o.shrunk or {}).get('ops', []))} "
                           f"ops: {o.first_diff}\n  {paths[0] if paths else ''}", err=True)
            elif o.status == "error":
                click.echo(f"\n{o.name}: cannot run: {o.error}", err=True)
        try:
            summary = run_fuzz(seed, cases, config, jobs=jobs, on_outcome=on_outcome)
        except KernelRunnerError as e:
            raise CliError(f"live kernel: {e}") from None
    click.echo(summary.line())
    if summary.diverge or summary.errors:
        sys.exit(1)


@main.group()
def faults() -> None:
    """The named fault-injection points of the model."""


@faults.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the points as JSON.")
def faults_list(as_json: bool) -> None:
    """List every fault point: name, kernel function, errno, what happens."""
    from .constants import ERRNO_NAMES
    from .faultpoints import FAULT_POINTS
    if as_json:
        click.echo(json.dumps([{"point": p.name, "function": p.function, "errno": ERRNO_NAMES[p.errno],
                                "outcome": p.outcome, "driver_callback": p.driver, "description": p.description}
                               for p in FAULT_POINTS.values()], indent=1))
        return
    for p in FAULT_POINTS.values():
        tag = "" if p.outcome == "returned" else f" [{p.outcome}]"
        click.echo(f"{p.name:<19} {ERRNO_NAMES[p.errno]:<7} {p.function}: {p.description}{tag}")


@main.command()
@click.argument("driver")
@_profile_option
@click.option("--all-profiles", is_flag=True, help="Explore under every kernel profile.")
@click.option("--pairs/--no-pairs", default=True, show_default=True,
              help="Also inject a second fault at every point each single-fault run hits.")
@click.option("--driver-points", is_flag=True, help="Also fail the driver's own callbacks (mmap_prepare, "
              "->mmap, mapped, success_hook, finish) without running them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write each finding's reproducing scenario (with its 'inject' field) here.")
@click.option("--replay", type=click.Path(dir_okay=False), default=None,
              help="Run one scenario (e.g. a written reproducer) on DRIVER and print what it finds.")
def explore(driver: str, profile: str | None, all_profiles: bool, pairs: bool, driver_points: bool, as_json: bool,
            out_dir: str | None, replay: str | None) -> None:
    """Run DRIVER's mmap under every fault and report lock, reference and errno bugs.

    DRIVER is a built-in driver name, or a Python file/module that defines open(mm, size) -> fd or one
    FileOperations subclass (FILE.py:NAME picks one).  Exit status 1 when the driver has findings; the
    kernel's own behaviour is reported separately and does not count."""
    from .explore import ExploreError, all_profile_names, format_report, load_driver, run_scenario, write_scenarios
    from .explore import explore as run_explore
    try:
        spec = load_driver(driver)
    except ExploreError as e:
        raise CliError(str(e)) from None
    if replay:
        try:
            with open(replay, encoding="utf-8") as f:
                raw = json.load(f)
            parse_scenario(raw)
        except (OSError, json.JSONDecodeError, ScenarioError) as e:
            raise CliError(f"{replay}: {e}") from None
        if profile:
            raw["kernel_profile"] = profile
        res = run_scenario(raw, spec)
        if as_json:
            click.echo(json.dumps({"unavailable": res.unavailable, "problems": [p.__dict__ for p in res.problems]},
                                  indent=1))
        else:
            if res.unavailable:
                click.echo(f"not available: {res.unavailable}")
            for p in res.problems:
                click.echo(f"{p.kind}: {p.category}: {p.what}")
        if any(p.kind == "driver" for p in res.problems):
            sys.exit(1)
        return
    profiles = all_profile_names() if all_profiles else [profile or "7.1"]
    rep = run_explore(spec, profiles, pairs=pairs, driver_points=driver_points)
    if out_dir:
        write_scenarios(rep, out_dir)
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        click.echo(format_report(rep), nl=False)
    if rep.findings:
        sys.exit(1)
