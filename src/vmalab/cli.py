"""The ``vmalab`` command line: run, diff, maps and demo."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click

from . import __version__
from .campaign import campaign_options
from .execute import ModelUnsupported, run_on_model
from .scenario import (
    ScenarioError,
    check_result,
    compare_results,
    load_json_file,
    load_scenario,
    parse_scenario,
    vma_line,
)

# What must not reach a terminal raw: C0 and C1 control characters and DEL (escape sequences), lone
# surrogates (not encodable), line and paragraph separators and bidirectional overrides.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character that a terminal would act on, or that cannot be encoded, written as
    its Python escape (``\\x1b``, ``\\ud800``); scenario names, notes and values are printed through this."""
    return _UNPRINTABLE.sub(lambda m: (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                       else f"\\u{ord(m.group()):04x}"), text)


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """click.echo of ``text`` whose lines are :func:`printable`."""
    click.echo("\n".join(printable(part) for part in text.split("\n")), err=err, nl=nl)


class CliError(click.ClickException):
    """A one-line error: printed as ``vmalab: error: ...`` with exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        echo(f"vmalab: error: {' '.join(self.message.split())}", err=True)


def refuse_together(**options: Any) -> None:
    """A one-line usage error when more than one of the given options is set (they would be ignored)."""
    given = [name for name, value in options.items() if value]
    if len(given) > 1:
        names = [f"--{name.replace('_', '-')}" for name in given]
        raise CliError(f"{names[0]} cannot be combined with {names[1]}")


def _fmt_args(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items() if k != "body")


def print_result(result: dict[str, Any], out: Any = None, traces: list[list[Any]] | None = None) -> None:
    """Print a result object for a person: one line per op, snapshots as VMA lines (every line
    :func:`printable`); ``traces`` (a ModelRunner's ``op_traces``): each op's trace lines below it."""
    w = out or sys.stdout

    def line(text: str, file: Any) -> None:
        print(printable(text), file=file)

    env = result.get("env", {})
    line(f"# {result.get('name')}  ({env.get('kernel', '?')}, window={env.get('window')})", file=w)
    for i, r in enumerate(result["results"]):
        if r.get("errno"):
            ret = f"-1 {r['errno']}"
        elif r.get("signal"):
            ret = f"-1 {r['signal']}"
        elif "vmas" in r and "ret" not in r:
            ret = f"{len(r['vmas'])} VMA{'s' * (len(r['vmas']) != 1)}"
        else:
            ret = str(r.get("ret"))
        extra = ""
        if "value" in r:
            extra += f" value={r['value']}"
        if "vec" in r:
            extra += f" vec={r['vec']}"
        if r.get("failed_at") is not None:
            extra += f" failed_at={r['failed_at']}"
        if r.get("fail_addr") is not None:
            extra += f" fail_addr={r['fail_addr']}"
        if isinstance(r.get("status"), dict):  # the compared lines of /proc/self/status, in kB
            extra += "".join(f" {k}={r['status'].get(k)}" for k in ("VmSize", "VmLck", "VmPin", "VmData", "VmStk"))
        note = f"   # {r['note']}" if r.get("note") else ""
        line(f"{i:3d} {r['op']:<10} {_fmt_args(r.get('args', {}))} -> {ret}{extra}{note}", file=w)
        for v in r.get("vmas", []) or []:
            line(f"      {vma_line(v)}", file=w)
        if r.get("child"):
            for v in r["child"].get("vmas", []):
                line(f"      child: {vma_line(v)}", file=w)
            for rd in r["child"].get("reads", []):
                line(f"      child read {rd}", file=w)
        if traces is not None and i < len(traces):
            for ev in traces[i]:
                line(f"      trace: {ev}", file=w)


def _load(path: str) -> Any:
    try:
        return load_scenario(path)
    except ScenarioError as e:  # the message starts with the path
        raise CliError(str(e)) from None


def _kernel_run(scn: Any, unprivileged: bool = False, allow_hwpoison: bool = False, path: str = "") -> dict[str, Any]:
    where = f"{path}: " if path else ""
    try:
        from .oracle.kernel import KernelRunnerError, run_on_kernel
    except ImportError as e:  # pragma: no cover
        raise CliError(f"live-kernel runner unavailable: {e}") from None
    try:
        return run_on_kernel(scn, unprivileged=unprivileged, allow_hwpoison=allow_hwpoison)
    except KernelRunnerError as e:
        raise CliError(f"{where}live kernel: {e}") from None


def _model_run(scn: Any, initial_maps: str | None = None, trace: bool = False,
               caps: Any = None, path: str = "", limits: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return run_on_model(scn, initial_maps=initial_maps, trace=trace, caps=caps,
                            **({"validate": "end"} | (limits or {})))
    except ModelUnsupported as e:
        raise CliError(f"{path}: {e}" if path else str(e)) from None


def _limit_options(f: Any) -> Any:
    """--max-resident, --max-iterations and --validate: the limits and checks of a model run
    (vmalab.execute.ModelRunner)."""
    from .execute import DEFAULT_MAX_ITERATIONS, DEFAULT_MAX_RESIDENT
    f = click.option("--validate", "validate", type=click.Choice(["each", "end", "off"]), default=None,
                     help="When the model's invariant checker runs: after every op (O(n) each: slow for "
                     "large scenarios), once at the end, or never [default: end].")(f)
    f = click.option("--max-iterations", type=click.IntRange(min=0), default=None,
                     help="The most repeat iterations the model runs in one scenario, all repeats together "
                     f"[default: {DEFAULT_MAX_ITERATIONS}].")(f)
    return click.option("--max-resident", type=click.IntRange(min=0), default=None,
                        help="The most pages the model maps at once (PTEs), or caches of one file "
                        f"[default: {DEFAULT_MAX_RESIDENT}].")(f)


def _unprivileged_option(f: Any) -> Any:
    return click.option("--unprivileged", is_flag=True,
                        help="Run without capabilities: the live runner drops them all before the first op, the "
                        "model starts without CAP_IPC_LOCK, CAP_SYS_RAWIO, CAP_SYS_RESOURCE and CAP_SYS_ADMIN.")(f)


def _hwpoison_option(f: Any) -> Any:
    return click.option("--allow-hwpoison", is_flag=True,
                        help="Let MADV_HWPOISON and MADV_SOFT_OFFLINE reach the live kernel (as root they poison "
                        "or offline real pages until reboot); refused otherwise.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmalab")
def main() -> None:
    """vmalab: an executable, Linux-faithful model of a process address space."""


def _profile_option(f: Any) -> Any:
    from .profiles import PROFILES
    return click.option("--kernel-profile", "profile", type=click.Choice(list(PROFILES)), default=None,
                        help="Kernel profile of the model (default: the scenario's kernel_profile, else 6.18).")(f)


def _driver_option(f: Any) -> Any:
    return click.option("--driver", "driver_files", multiple=True, metavar="FILE.py[:NAME]",
                        help="Load a driver from a Python file (or module), as 'vmalab explore' does; the "
                        "scenario opens it as dev:STEM (the file's name without .py; or, with one --driver, "
                        "any dev:NAME that is no built-in driver).  Repeatable.  Code runs only when named "
                        "here: a scenario alone never imports a file.")(f)


def _load_drivers(specs: tuple[str, ...]) -> dict[str, Any]:
    """Load the --driver files: {name scenarios call it: open(mm, size) -> fd}."""
    from .drivers import driver_names
    from .explore import ExploreError, load_driver
    out: dict[str, Any] = {}
    for spec in specs:
        if spec in driver_names():
            raise CliError(f"--driver {spec}: a built-in driver; scenarios open it as dev:{spec} without --driver")
        try:
            d = load_driver(spec)
        except ExploreError as e:
            raise CliError(f"--driver {spec}: {e}") from None
        if d.name in out:
            raise CliError(f"--driver {spec}: a driver named {d.name!r} is loaded already")
        out[d.name] = d.opener
    return out


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result object of the scenario format.")
@click.option("--kernel", is_flag=True, help="Run on this machine's live kernel instead of the model.")
@click.option("--trace", is_flag=True, help="Print the model's trace events, each below the op that caused it.")
@click.option("--step", is_flag=True, help="Print each op as it runs and the /proc/self/maps lines it removed (-) "
              "and added (+); coloured on a terminal unless NO_COLOR is set.")
@click.option("--all-profiles", is_flag=True, help="Run on the model under every kernel profile and show how "
              "the outcome changes.")
@_profile_option
@_driver_option
@_unprivileged_option
@_hwpoison_option
@_limit_options
def run(scenario: str, as_json: bool, kernel: bool, trace: bool, step: bool, all_profiles: bool, profile: str | None,
        driver_files: tuple[str, ...], unprivileged: bool, allow_hwpoison: bool, max_resident: int | None,
        max_iterations: int | None, validate: str | None) -> None:
    """Run SCENARIO.json on the model (or, with --kernel, on the live kernel)."""
    refuse_together(kernel=kernel, driver=driver_files)
    drivers = _load_drivers(driver_files)
    limits: dict[str, Any] = {"max_resident": max_resident, "max_iterations": max_iterations, "drivers": drivers,
                              "validate": validate or "end"}
    refuse_together(json=as_json, trace=trace)
    refuse_together(step=step, json=as_json)
    refuse_together(step=step, kernel=kernel)
    refuse_together(step=step, all_profiles=all_profiles)
    refuse_together(kernel=kernel, all_profiles=all_profiles)
    refuse_together(kernel=kernel, kernel_profile=profile)
    refuse_together(all_profiles=all_profiles, kernel_profile=profile)
    refuse_together(kernel=kernel, trace=trace)
    refuse_together(kernel=kernel, max_resident=max_resident is not None)
    refuse_together(kernel=kernel, max_iterations=max_iterations is not None)
    refuse_together(kernel=kernel, validate=validate is not None)
    if _is_program_file(scenario):  # a recorded program (docs/real-programs.md)
        _refuse_for_program(scenario, trace=trace, step=step, all_profiles=all_profiles, kernel_profile=profile,
                            driver=driver_files, unprivileged=unprivileged, allow_hwpoison=allow_hwpoison,
                            max_resident=max_resident is not None, max_iterations=max_iterations is not None,
                            validate=validate is not None)
        _program_run(scenario, kernel, as_json)
        return
    scn = _load(scenario)
    if step:
        from .termview import run_steps, use_color
        on = use_color("auto", sys.stdout)
        try:
            run_steps(scn, lambda text: click.echo(text, color=on), color=on, clean=printable, trace=trace,
                      kernel=profile, caps=() if unprivileged else None, **limits)
        except ModelUnsupported as e:
            raise CliError(f"{scenario}: {e}") from None
        return
    if all_profiles:
        _run_all_profiles(scn, as_json, trace, scenario, limits)
        return
    if kernel:
        result = _kernel_run(scn, unprivileged, allow_hwpoison, path=scenario)
    else:
        from .execute import ModelRunner, check_supported
        try:
            check_supported(scn)
            runner = ModelRunner(scn, trace=trace, kernel=profile, caps=() if unprivileged else None, **limits)
            result = runner.run()
        except ModelUnsupported as e:
            raise CliError(f"{scenario}: {e}") from None
    if as_json:
        result.get("env", {}).pop("initial_maps", None) if not kernel else None
        click.echo(json.dumps(result, indent=1))
        return
    print_result(result, traces=runner.op_traces if trace and not kernel else None)
    if not kernel:
        from .procfs import maps
        click.echo("# final /proc/self/maps (model)")
        echo(maps(runner.mm), nl=False)


def _run_all_profiles(scn: Any, as_json: bool, trace: bool, path: str = "",
                      limits: dict[str, Any] | None = None) -> None:
    """Run a scenario under every profile; print each op's outcome per profile, and the trace if asked."""
    from .driver import ProfileFeatureError
    from .execute import ModelLimitExceeded, ModelRunner, check_supported
    from .profiles import PROFILES
    try:
        check_supported(scn)
    except ModelUnsupported as e:
        raise CliError(f"{path}: {e}") from None
    outcomes: dict[str, Any] = {}
    traces: dict[str, list[str]] = {}
    for name in PROFILES:
        try:
            runner = ModelRunner(scn, trace=trace, kernel=name, **({"validate": "end"} | (limits or {})))
            outcomes[name] = runner.run()
            traces[name] = [str(ev) for ev in runner.mm.trace]
        except ProfileFeatureError as e:
            outcomes[name] = {"unavailable": str(e)}
        except ModelLimitExceeded as e:  # a limit of the run, not a feature of the profile
            raise CliError(f"{path}: kernel profile {name}: {e}") from None
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
            echo(f"   not available: {res['unavailable']}")
            continue
        for i, line in enumerate(summarize_result(res)):
            echo(f" {'*' if i in differing else ' '} {line}")
        if trace:
            for ev in traces[name]:
                echo(f"     trace: {ev}")
    unavailable = [n for n, r in outcomes.items() if "unavailable" in r]
    click.echo(f"== ops whose outcome differs across profiles (*): {', '.join(map(str, differing)) or 'none'}"
               + (f"; not available under: {', '.join(unavailable)}" if unavailable else ""))


@main.command()
def drivers() -> None:
    """List the built-in drivers (scenarios open them as dev:NAME), one line each."""
    import sys as _sys

    from .drivers import REGISTRY, driver_names
    for name in driver_names():
        mod = _sys.modules.get(getattr(REGISTRY[name], "__module__", ""))
        doc = " ".join(((mod.__doc__ if mod else None) or "").split("\n\n")[0].split()).replace("``", "")
        end = doc.find(". ")  # the docstring's first sentence, cut at a word to fit 100 columns
        doc = doc[:end + 1] if end >= 0 else doc
        if len(doc) > 84:
            doc = doc[:81].rsplit(" ", 1)[0] + " ..."
        echo(f"{name:<15} {doc}")


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
@_unprivileged_option
@_hwpoison_option
@_limit_options
def diff(scenario: str, as_json: bool, expected: str | None, unprivileged: bool, allow_hwpoison: bool,
         max_resident: int | None, max_iterations: int | None, validate: str | None) -> None:
    """Run SCENARIO.json on the live kernel and on the model; exit 1 on any divergence.

    The model starts with the capabilities the live runner had (env.caps of its result: as an unprivileged
    user, none), so that both sides run with the same privileges."""
    refuse_together(expected=expected, allow_hwpoison=allow_hwpoison)
    if _is_program_file(scenario):  # a recorded program: the recording is the kernel's side
        _refuse_for_program(scenario, expected=expected, unprivileged=unprivileged, allow_hwpoison=allow_hwpoison,
                            max_resident=max_resident is not None, max_iterations=max_iterations is not None,
                            validate=validate is not None)
        _program_diff(scenario, as_json)
        return
    scn = _load(scenario)
    if expected:
        try:
            kres = check_result(load_json_file(expected))
        except ScenarioError as e:
            msg = str(e)
            raise CliError(msg if msg.startswith(f"{expected}: ") else f"{expected}: {msg}") from None
    else:
        kres = _kernel_run(scn, unprivileged, allow_hwpoison, path=scenario)
    caps = kres.get("env", {}).get("caps")
    if caps is None and unprivileged:
        caps = ()
    mres = _model_run(scn, initial_maps=kres.get("env", {}).get("initial_maps"), caps=caps, path=scenario,
                      limits={"max_resident": max_resident, "max_iterations": max_iterations,
                                                                   "validate": validate or "end"})
    diffs = compare_results(kres, mres)
    if as_json:
        click.echo(json.dumps({"name": scn.name, "agree": not diffs, "differences": diffs}, indent=1))
    else:
        if diffs:
            echo(f"{scn.name}: DIVERGES ({len(diffs)} difference{'s' * (len(diffs) != 1)})")
            for d in diffs[:10]:
                echo(f"  {d}")
            side_by_side(kres, mres)
        else:
            n = len(kres["results"])
            echo(f"{scn.name}: agrees ({n} op{'s' * (n != 1)})")
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

    echo(f"\nfirst divergence: op {i} ({k.get('op')} {_fmt_args(k.get('args', {}))})")
    left, right = lines(k), lines(m)
    click.echo(f"  {'kernel (expected)':<{width}} | model (got)")
    for j in range(max(len(left), len(right))):
        a = left[j] if j < len(left) else ""
        b = right[j] if j < len(right) else ""
        mark = " " if a == b else "*"
        echo(f"{mark} {a:<{width}} | {b}")


@main.command()
@click.argument("scenarios", type=click.Path(dir_okay=False), nargs=-1, required=True)
@_hwpoison_option
def record(scenarios: tuple[str, ...], allow_hwpoison: bool) -> None:
    """Run each SCENARIO.json on the live kernel and write NAME.kernel.json beside it.

    Recordings (NAME.kernel.json, as a glob like tests/scenarios/*.json names them) and model-only
    scenarios are skipped with a note; an error names its file and the next file is still recorded; the
    exit status is 2 if any file failed."""
    failed = 0
    for path in scenarios:
        if path.endswith(".kernel.json"):
            echo(f"skipped {path}: a recording")
            continue
        try:
            scn = _load(path)
            reason = model_only_reason(scn)
            if reason:
                echo(f"skipped {path}: model-only ({reason})")
                continue
            res = _kernel_run(scn, allow_hwpoison=allow_hwpoison, path=path)
            out = recording_path(path)
            try:
                with open(out, "w", encoding="utf-8") as f:
                    json.dump(res, f, indent=1)
                    f.write("\n")
            except OSError as e:
                raise CliError(f"{out}: {e.strerror or e}") from None
        except CliError as e:
            e.show()
            failed += 1
            continue
        echo(f"recorded {out} ({res.get('env', {}).get('kernel')})")
    if failed:
        raise CliError(f"{failed} of {len(scenarios)} files failed")


def model_only_reason(scn: Any) -> str | None:
    """Why the live kernel cannot run ``scn`` (another kernel profile, injected faults, a built-in model
    driver), or None."""
    profile = scn.raw.get("kernel_profile")
    if profile not in (None, "6.18"):
        return f"kernel profile {profile}"
    if scn.raw.get("inject"):
        return "injects faults"
    drivers = sorted({op.p["fd"].name for op in scn.iter_ops() if getattr(op.p.get("fd"), "kind", None) == "dev"})
    return f"driver dev:{', dev:'.join(drivers)}" if drivers else None


def recording_path(scenario_path: str) -> str:
    """Where the kernel's recorded result of a scenario lives: NAME.kernel.json beside NAME.json."""
    base = scenario_path[:-5] if scenario_path.endswith(".json") else scenario_path
    return base + ".kernel.json"


@main.command("record-program", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the ProgramTrace JSON here [default: stdout; the command's stdout then goes to stderr].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds until the traced processes are killed and the recording fails.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def record_program(output: str | None, timeout: float, command: tuple[str, ...]) -> None:
    """Run COMMAND under ptrace with ASLR off and record every process's memory syscalls, fd table,
    execs and maps (docs/real-programs.md): vmalab record-program -o ls.program.json -- ls /"""
    from .oracle.record_program import RecordError
    from .oracle.record_program import record_program as run_recorder
    try:
        trace = run_recorder(list(command), timeout=timeout, stdout_to_stderr=output is None)
    except RecordError as e:
        raise CliError(str(e)) from None
    text = json.dumps(trace, indent=1) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise CliError(f"{output}: {e.strerror or e}") from None
    nmem = sum(1 for p in trace["processes"] for ev in p["events"] if ev["call"] not in
               ("openat", "open", "creat", "openat2", "close", "close_range", "dup", "dup2", "dup3", "fcntl_dupfd",
                "memfd_create", "ftruncate", "execve", "execveat", "clone", "clone3", "fork", "vfork", "exit_group"))
    echo(f"recorded {len(trace['processes'])} process(es), {nmem} memory calls"
         + (f" -> {output}" if output else ""), err=True)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None


@main.command()
@click.argument("trace_file", metavar="LOG_OR_JSON", type=click.Path(dir_okay=False))
@click.option("--maps", "maps_opts", multiple=True, metavar="[PATH=]FILE",
              help="The maps right after execve (instead of the exec model): FILE for the first process, "
                   "PATH=FILE for the execve of PATH (or its basename); repeatable.  FILE.smaps or a "
                   "FILE ending in smaps gives the VmFlags too.")
@click.option("--no-exec-model", is_flag=True, help="Never run the exec model (only given or recorded maps).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(trace_file: str, maps_opts: tuple[str, ...], no_exec_model: bool, as_json: bool) -> None:
    """Replay a program's trace on the model: an `strace -f -X raw -y` log or a ProgramTrace JSON
    (`vmalab record-program`).  Prints the model's /proc/PID/maps of each process and the memory calls
    whose model result differs from the traced one (and the final maps' differences when the trace has
    them).  Exit status 1 when something diverges.  Recipe: setarch -R strace -f -X raw -y -o LOG CMD"""
    from .programtrace import ProgramTraceError, loads
    from .replay import replay as run_replay
    from .strace import StraceParseError, looks_like_strace, parse_strace
    text = _read_text(trace_file)
    try:
        trace = parse_strace(text) if looks_like_strace(text) else loads(text)
    except (StraceParseError, ProgramTraceError) as e:
        raise CliError(f"{trace_file}: {e}") from None
    given: dict[str, str] = {}
    given_smaps: dict[str, str] = {}
    first: str | None = None
    first_smaps: str | None = None
    for opt in maps_opts:
        key, sep, fname = opt.rpartition("=")
        body = _read_text(fname)
        smaps_text = body if "VmFlags:" in body else None
        if smaps_text is None:
            try:
                with open(fname + ".smaps", encoding="utf-8") as f:
                    smaps_text = f.read()
            except OSError:
                pass
        if smaps_text is body:  # an smaps file: its header lines are the maps
            body = "\n".join(line for line in body.splitlines() if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line))
        if sep:
            given[key] = body
            if smaps_text:
                given_smaps[key] = smaps_text
        else:
            first, first_smaps = body, smaps_text
    initial: str | dict[str, str] | None = given or first
    initial_smaps: str | dict[str, str] | None = given_smaps or first_smaps
    if given and first is not None:
        raise CliError("--maps FILE and --maps PATH=FILE cannot be combined")
    result = run_replay(trace, initial_maps=initial, initial_smaps=initial_smaps,
                        exec_model=False if no_exec_model else None)
    _print_replay(result, as_json)
    if not result.ok:
        sys.exit(1)


def _print_replay(result: Any, as_json: bool) -> None:
    """Print a :class:`vmalab.replay.ReplayResult` as ``vmalab replay`` does (or as JSON)."""
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    for p in result.processes:
        echo(f"== pid {p.pid}: {p.start}; {p.memory_calls} memory calls, "
             f"{len(p.divergences)} divergent" + ("" if p.replayed else " (not replayed)"))
        for note in p.notes:
            echo(f"   note: {note}")
        if p.replayed:
            echo(p.maps, nl=False)
        for d in p.divergences:
            echo(f"DIVERGES: {d.describe()}")
        if p.maps_differences is not None:
            echo("final maps: " + ("equal to the traced ones" if not p.maps_differences else
                                   f"{len(p.maps_differences)} difference(s)"))
            for diff in p.maps_differences:
                echo(f"MAPS DIFFER: {diff}")
    for note in result.notes:
        echo(f"note: {note}")
    n = len(result.divergences)
    echo(f"{len(result.processes)} process(es), {n} divergent memory call(s)"
         + ("" if result.ok else " -- the model differs from the trace"))


def _is_program_file(path: str) -> bool:
    """Whether ``path`` is a ProgramTrace (``"format": "vmalab-program/1"``) rather than a scenario."""
    from .programtrace import is_program_trace
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return is_program_trace(f.read())
    except OSError:
        return False  # the scenario loader says what is wrong with it


def _refuse_for_program(path: str, **options: Any) -> None:
    given = [name for name, value in options.items() if value]
    if given:
        raise CliError(f"{path}: --{given[0].replace('_', '-')} does not apply to a recorded program")


def _load_program(path: str) -> Any:
    from .programtrace import ProgramTraceError, loads
    try:
        return loads(_read_text(path))
    except ProgramTraceError as e:
        raise CliError(f"{path}: {e}") from None


def _program_run(path: str, kernel: bool, as_json: bool) -> None:
    """``vmalab run PROGRAM.json``: the replay on the model, printed as ``vmalab replay`` prints it (exit 1
    when it diverges); with ``--kernel``: the program recorded again live (the recorder), printed."""
    trace = _load_program(path)
    if not kernel:
        from .replay import replay as run_replay
        result = run_replay(trace)
        _print_replay(result, as_json)
        if not result.ok:
            sys.exit(1)
        return
    from .oracle.record_program import RecordError, record_program
    start = trace.processes[0].start if trace.processes else None
    env = None
    if start is not None and start.kind == "exec" and start.envp is not None:
        env = dict(v.split("=", 1) for v in start.envp if "=" in v)
    if not trace.command:
        raise CliError(f"{path}: the trace has no command to record again")
    try:
        live = record_program(list(trace.command), env=env, stdout_to_stderr=True)
    except RecordError as e:
        raise CliError(f"{path}: live kernel: {e}") from None
    if as_json:
        click.echo(json.dumps(live, indent=1))
        return
    from .programtrace import MEMORY_CALLS
    echo(f"# {' '.join(trace.command)}  (recorded live on {live.get('kernel')})")
    for p in live["processes"]:
        start_d = p["start"]
        how = f"exec {start_d['exec']['path']}" if "exec" in start_d else (
            f"fork of {start_d['fork']['parent']} at event {start_d['fork']['event']}")
        mem = [ev for ev in p["events"] if ev["call"] in MEMORY_CALLS]
        echo(f"== pid {p['pid']}: {how}; {len(mem)} memory calls; exit {p.get('exit')}")
        for i, ev in enumerate(p["events"]):
            if ev["call"] in MEMORY_CALLS:
                args = ", ".join(hex(a) if a > 9 else str(a) for a in ev["args"])
                ret = ev["ret"]
                echo(f"{i:4d} {ev['call']}({args}) = {hex(ret) if ret > 9 else ret}")
            elif ev["call"] == "execve":
                echo(f"{i:4d} execve({ev.get('path')})")
        if p.get("final_maps"):
            echo("# final /proc/PID/maps (kernel)")
            echo(p["final_maps"], nl=False)


def _program_diff(path: str, as_json: bool) -> None:
    """``vmalab diff PROGRAM.json``: the model's replay against the recording, field by field (every
    memory call's return, the final maps and VmFlags of every process); exit 1 on any difference."""
    from .replay import replay as run_replay
    trace = _load_program(path)
    result = run_replay(trace)
    diffs: list[str] = []
    for p in result.processes:
        if not p.replayed:
            diffs.append(f"pid {p.pid}: not replayed ({'; '.join(p.notes)})")
        diffs += [d.describe() for d in p.divergences]
        diffs += [f"pid {p.pid}: final maps: {d}" for d in p.maps_differences or []]
    notes = [f"pid {p.pid}: {n}" for p in result.processes for n in p.notes if n.startswith("reordered")]
    name = " ".join(trace.command) or path
    ncalls = sum(p.memory_calls for p in result.processes)
    if as_json:
        click.echo(json.dumps({"name": name, "agree": not diffs, "differences": diffs, "notes": notes}, indent=1))
    elif diffs:
        echo(f"{name}: DIVERGES ({len(diffs)} difference{'s' * (len(diffs) != 1)})")
        for d in diffs:
            echo(f"  {d}")
    else:
        echo(f"{name}: agrees ({len(result.processes)} process(es), {ncalls} memory calls, final maps and VmFlags)")
    if not as_json:
        for n in notes:
            echo(f"  note: {n}")
    if diffs:
        sys.exit(1)


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False), required=False)
@click.option("--smaps", is_flag=True, help="Print smaps instead of maps.")
@click.option("--pid", type=click.IntRange(min=1), default=None,
              help="Import the live process PID (its maps, smaps, stat and limits) instead of running a scenario.")
@click.option("--color", "color", is_flag=False, flag_value="auto", default=None, metavar="[=WHEN]",
              help="Colour each line by region kind, pwndbg-style, with a legend line; WHEN is auto (the default: "
              "only on a terminal, not with NO_COLOR set), always or never.")
@click.option("--gaps", "show_gaps", is_flag=True, help="Add a line for every hole between VMAs: its range and size.")
@_driver_option
@_limit_options
def maps(scenario: str | None, smaps: bool, pid: int | None, color: str | None, show_gaps: bool,
         driver_files: tuple[str, ...], max_resident: int | None, max_iterations: int | None,
         validate: str | None) -> None:
    """Print the model's /proc/self/maps after SCENARIO.json (or of a fresh process), or the model's view of
    a live process (--pid); --color and --gaps as pwndbg's vmmap (docs/tour.md)."""
    from .execute import ModelRunner, check_supported
    from .procfs import maps as maps_text
    from .procfs import smaps as smaps_text
    from .termview import color_option, render_maps, use_color
    try:
        color, scenario = color_option(color, scenario)
    except ValueError as e:
        raise CliError(str(e)) from None
    refuse_together(smaps=smaps, color=color is not None)
    refuse_together(smaps=smaps, gaps=show_gaps)

    def echo_maps(mm: Any) -> None:
        if color is None and not show_gaps:
            echo((smaps_text if smaps else maps_text)(mm), nl=False)
            return
        on = color is not None and use_color(color, sys.stdout)
        click.echo(render_maps(mm, color=on, show_gaps=show_gaps, clean=printable), nl=False, color=on)
    if pid is not None:
        if scenario:
            raise CliError("--pid cannot be combined with a SCENARIO")
        from .mm import MM
        try:
            mm = MM.from_pid_or_error(pid)
        except ValueError as e:
            raise CliError(str(e)) from None
        echo_maps(mm)
        return
    scn = _load(scenario) if scenario else parse_scenario({"name": "fresh", "ops": []})
    try:
        check_supported(scn)
        runner = ModelRunner(scn, validate=validate or "end", max_resident=max_resident, max_iterations=max_iterations,
                             drivers=_load_drivers(driver_files))
        runner.run()
    except ModelUnsupported as e:
        raise CliError(f"{scenario}: {e}" if scenario else str(e)) from None
    echo_maps(runner.mm)


@main.command()
@click.argument("target", metavar="SCENARIO|PROGRAM", required=False)
@click.option("-o", "--output", default=None, metavar="FILE.html",
              help="Where to write the page (default: the input's name with .html, here; - for stdout).")
@click.option("--pid", type=click.IntRange(min=1), default=None, help="Draw the live process PID instead.")
@click.option("--pages", is_flag=True, help="Draw each VMA's page strip (anon, zero page, file, guard, PFN).")
@click.option("--snapshots", is_flag=True, help="One lane per snapshot op (and the end), not one per op.")
@_profile_option
def view(target: str | None, output: str | None, pid: int | None, pages: bool, snapshots: bool,
         profile: str | None) -> None:
    """Draw a scenario, a recorded program or a live process as one static HTML page (docs/view.md)."""
    from .view import ViewError, write_view
    try:
        where, lanes = write_view(target, output, pid=pid, pages=pages, per_op=not snapshots, kernel=profile)
    except ViewError as e:
        raise CliError(str(e)) from None
    if output == "-":
        click.echo(where, nl=False)
    else:
        echo(f"wrote {where}: {len(lanes)} lane(s), {len(lanes[-1].vmas)} VMAs in the last")


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
@campaign_options(fuzz=True)
def fuzz(seed: int, cases: int, nops: int, jobs: int | None, out_dir: str, ops_filter: tuple[str, ...],
         no_shrink: bool, shard: str | None, start: int, summary_path: str | None, backend: str,
         address: str | None, progress_every: float) -> None:
    """Random scenarios on the live kernel and on the model; diverging cases are shrunk and written to --out.

    Prints 'N cases, N agree, N diverge' and exits 1 if any case diverges (or cannot be run).  --shard I/N
    runs one part of the cases and keeps a resumable summary; 'vmalab campaign merge' combines them
    (docs/campaigns.md)."""
    from .campaign import CampaignError, fuzz_command
    from .oracle.fuzz import FuzzConfig
    try:
        config = FuzzConfig.from_filter(nops, ops_filter, shrink=not no_shrink)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        status = fuzz_command(seed, cases, config, jobs, out_dir, shard, start, summary_path, backend, address,
                              progress_every)
    except CampaignError as e:
        raise CliError(str(e)) from None
    if status:
        sys.exit(status)


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


@main.group()
def campaign() -> None:
    """Sharded fuzz and explore campaigns: merge shard summaries (docs/campaigns.md)."""


@campaign.command("merge")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the Markdown report here (default: print it).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here.")
def campaign_merge(paths: tuple[str, ...], out: str | None, json_path: str | None) -> None:
    """Combine shard summaries (files, or directories of them): totals, divergences deduplicated by first
    difference and grouped by kernel release.  Refuses summaries of different seeds, configs or vmalab
    versions, and overlapping or missing ranges.  Exit status 1 when the campaign found something."""
    from .campaign import CampaignError, merge_command
    try:
        status = merge_command(paths, out, json_path)
    except CampaignError as e:
        raise CliError(str(e)) from None
    if status:
        sys.exit(status)


def _explore_profile_option(f: Any) -> Any:
    from .profiles import PROFILES
    return click.option("--kernel-profile", "profile", type=click.Choice(list(PROFILES)), default=None,
                        help=f"Kernel profile to explore under (default: {EXPLORE_DEFAULT_PROFILE}; with --replay, "
                        "the scenario's kernel_profile, else 6.18).")(f)


#: The profile ``vmalab explore`` runs when none is given: the first release with the whole mmap_prepare
#: contract (actions, hooks, vm_ops->mapped).
EXPLORE_DEFAULT_PROFILE = "7.1"


@main.command()
@click.argument("driver")
@_explore_profile_option
@click.option("--all-profiles", is_flag=True, help="Explore under every kernel profile.")
@click.option("--pairs/--no-pairs", default=True, show_default=True,
              help="Also inject a second fault at every point each single-fault run hits.")
@click.option("--driver-points", is_flag=True, help="Also fail the driver's own callbacks (mmap_prepare, "
              "->mmap, mapped, success_hook, finish) without running them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for CI; with a 'summary').")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write each finding's reproducing scenario (with its 'inject' field) here.")
@click.option("--replay", type=click.Path(dir_okay=False), default=None,
              help="Run one scenario (e.g. a written reproducer) on DRIVER and print what it finds.")
@campaign_options(fuzz=False)
def explore(driver: str, profile: str | None, all_profiles: bool, pairs: bool, driver_points: bool, as_json: bool,
            out_dir: str | None, replay: str | None, shard: str | None, summary_path: str | None, backend: str,
            address: str | None, progress_every: float) -> None:
    """Run DRIVER's mmap under every fault and report lock, reference and errno bugs.

    DRIVER is a built-in driver name, or a Python file/module that defines open(mm, size) -> fd or one
    FileOperations subclass (FILE.py:NAME picks one).  Exit status 1 when the driver has findings; the
    kernel's own behaviour is reported separately and does not count."""
    from .explore import (
        ExploreError,
        Progress,
        all_profile_names,
        format_report,
        load_driver,
        run_scenario,
        write_scenarios,
    )
    from .explore import explore as run_explore
    refuse_together(all_profiles=all_profiles, kernel_profile=profile)
    refuse_together(replay=replay, all_profiles=all_profiles)
    refuse_together(replay=replay, shard=shard)
    refuse_together(replay=replay, summary=summary_path)
    try:
        spec = load_driver(driver)
    except ExploreError as e:
        raise CliError(str(e)) from None
    if replay:
        try:
            raw = load_json_file(replay)
            parse_scenario(raw)
        except ScenarioError as e:
            msg = str(e)
            raise CliError(msg if msg.startswith(f"{replay}: ") else f"{replay}: {msg}") from None
        if profile:
            raw["kernel_profile"] = profile
        res = run_scenario(raw, spec)
        if not as_json:
            _replay_run(raw, spec, replay)
        if as_json:
            click.echo(json.dumps({"unavailable": res.unavailable, "problems": [p.__dict__ for p in res.problems]},
                                  indent=1))
        else:
            if res.unavailable:
                click.echo(f"not available: {res.unavailable}")
            for p in res.problems:
                click.echo(f"{p.kind}: {p.category}: {p.what}")
            if not res.problems and not res.unavailable:
                click.echo("no findings")
        if any(p.kind == "driver" for p in res.problems):
            sys.exit(1)
        return
    profiles = all_profile_names() if all_profiles else [profile or EXPLORE_DEFAULT_PROFILE]
    if shard or summary_path or backend != "local" or address:  # a campaign: one case per profile
        from .campaign import CampaignError, explore_command
        try:
            rep, _ = explore_command(driver, profiles, pairs, driver_points, shard, summary_path, backend, address,
                                     progress_every)
        except CampaignError as e:
            raise CliError(str(e)) from None
    else:
        progress = Progress()  # stderr: a line in place on a terminal, else one every 10 s
        rep = run_explore(spec, profiles, pairs=pairs, driver_points=driver_points, progress=progress)
        progress.done()
    if out_dir:
        write_scenarios(rep, out_dir)
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        click.echo(format_report(rep), nl=False)
    if rep.findings:
        sys.exit(1)


def _replay_run(raw: dict[str, Any], spec: Any, path: str) -> None:
    """Print a replayed scenario as ``vmalab run --trace --driver`` does (each op with its trace lines, then
    the final maps): what the explorer checks, shown whether or not it finds anything."""
    from .execute import ModelRunner
    from .procfs import maps as maps_text
    try:
        runner = ModelRunner(parse_scenario(raw), validate=False, trace=True, drivers={spec.name: spec.opener})
    except ModelUnsupported as e:
        echo(f"# {path}: cannot run: {e}")
        return
    try:
        result = runner.run()
    except Exception as e:  # the driver raised (the kernel would oops): show the ops that ran
        done = len(runner.op_traces)
        echo(f"# {path}: the run stopped at op {done}: {type(e).__name__}: {e}")
        result = {"name": raw.get("name"), "env": {"kernel": "model-" + runner.mm.profile.name},
                  "results": [{"op": op.op, "args": op.args, "ret": "-"} for op in runner.scn.ops[:done]]}
    print_result(result, traces=runner.op_traces)
    click.echo("# final /proc/self/maps (model)")
    echo(maps_text(runner.mm), nl=False)


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--at", "at", metavar="ADDR", default=None,
              help="Explain the VMA at ADDR (0x..., base+X, map:NAME+X) against its prev and next after the last "
              "op; without it, the merge attempts of the last op that attempted one.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@_profile_option
@_driver_option
def explain(scenario: str, at: str | None, as_json: bool, profile: str | None, driver_files: tuple[str, ...]) -> None:
    """Why VMAs of SCENARIO merge or not: every condition mm/vma.c checks, the one that decided, and the
    kernel function that checks it (docs/explain.md)."""
    from .explain_scenario import ExplainError, explain_scenario
    drivers = _load_drivers(driver_files)
    try:
        rep = explain_scenario(_load(scenario), at, profile, drivers)
    except ExplainError as e:
        raise CliError(f"{scenario}: {e}") from None
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        echo("\n".join(rep.lines()))


@main.command("port-check")
@click.argument("old")
@click.argument("new")
@_profile_option
@click.option("--no-faults", is_flag=True, help="Compare the fault-free runs only.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def port_check(old: str, new: str, profile: str | None, no_faults: bool, as_json: bool) -> None:
    """Compare OLD (a legacy ->mmap driver) with NEW (its ->mmap_prepare port).

    Both run through the same shapes and injected failures on every kernel profile (or --kernel-profile);
    every behavioural difference is listed side by side, the ones upstream documents as intended marked
    INTENDED.  OLD and NEW are driver files (FILE.py[:NAME]) or built-in names, as for explore.  Exit
    status 1 when there is an unintended difference."""
    from .explore import ExploreError, load_driver
    from .portcheck import compare, format_report
    try:
        specs = load_driver(old), load_driver(new)
    except ExploreError as e:
        raise CliError(str(e)) from None
    rep = compare(*specs, profiles=[profile] if profile else None, faults=not no_faults)
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        click.echo(format_report(rep), nl=False)
    if rep.unintended:
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--engine", type=click.Choice(["unicorn", "qiling"]), default="unicorn", show_default=True,
              help="The emulator that runs the program's instructions.")
@click.option("--mode", type=click.Choice(["mmu", "mirror"]), default="mmu", show_default=True,
              help="Unicorn: vmalab as the MMU (virtual TLB), or Unicorn's regions mirroring vmalab's VMAs.")
@click.option("-i", "--ignore-environment", is_flag=True, help="Start the program with an empty environment.")
@click.argument("program", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(engine: str, mode: str, ignore_environment: bool, program: str, args: tuple[str, ...]) -> None:
    """Run PROGRAM (a static x86-64 Linux ELF) in an emulator with vmalab as its address space.

    Its stdout and stderr pass through; the exit status is the program's, or 128 + the signal it died
    of, as a shell reports it (the fault is described on stderr).  See docs/emulators.md."""
    import os

    from .binfmt_elf import ExecError

    argv = [program, *args]
    envp = [] if ignore_environment else [f"{k}={v}" for k, v in os.environ.items()]
    if engine == "qiling":
        try:
            from .adapters import qiling as ql_adapter

            (kind, value), ad = ql_adapter.run_program(program, argv, env=dict(e.split("=", 1) for e in envp))
        except ImportError as e:
            raise CliError(f"--engine qiling: {e}") from None
        sys.stdout.flush()
        if kind == "signal":
            if ad.fault is not None:
                echo(f"vmalab: {program}: killed by signal {value} ({ad.fault.signal} at {ad.fault.addr:#x}, "
                     f"rip {ad.fault.pc:#x})", err=True)
            sys.exit(128 + value)
        sys.exit(value)
    from .adapters import unicorn as uc_adapter

    try:
        res = uc_adapter.run(program, argv, envp, mode=mode)
    except uc_adapter.UnicornUnavailable as e:
        raise CliError(str(e)) from None
    except (ExecError, OSError) as e:
        raise CliError(str(e)) from None
    sys.stdout.flush()
    if res.signal is not None:
        where = f" ({res.fault.signal} {res.fault.code} at {res.fault.addr:#x}, rip {res.pc:#x})" \
            if res.fault is not None and res.pc is not None else ""
        echo(f"vmalab: {program}: killed by signal {res.signal}{where}", err=True)
    sys.exit(res.status)
