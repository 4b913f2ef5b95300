"""Beam 2.62's Flink runner, with two leaks mended: SDF checkpoint state (apache/beam#27648)
and one thread per bundle.

In Beam 2.62 every self-checkpoint of a splittable DoFn on the portable Flink
runner (`tracker.defer_remainder()`, which a polling reader does several times
a second) registers a new keyed state named after the checkpoint and never
clears it: checkpoints grow until the TaskManager runs out of heap (measured
here: about four minutes for a Kafka reader, docs/runtime.md). Later Beam
keeps all residuals in one map state and removes each when it is resumed; this
module rebuilds the two classes concerned the same way.

With `--experiments=data_buffer_time_limit_ms=N` (the streaming job's
`flink.data_buffer_time_limit_ms`), the runner's `BeamFnDataOutboundAggregator`
starts a flush executor for every bundle and, when the bundle ends, cancels its
task but never shuts the executor down: each bundle leaves a thread behind in
the TaskManager (measured: ~40 a second for an idle job, thousands within
minutes). The rebuilt class shuts its executor down in `discard()`, which the
runner calls at the end of every bundle.

The classes are rebuilt from Beam's own 2.62 sources (fetched through Maven),
and the job server puts the jar first on its classpath, as the Flink cluster does
on its own (`dev.flink.cluster_lib`, where Flink loads Beam's classes from), so
Flink loads these classes from it. Built once, on first use, into the folder the caller names
(`fleetstream.dev.jobserver` passes `$FLEETSTREAM_HOME/java`, and the `java` it runs).

# TODO(https://github.com/apache/beam/issues/27648): drop the two checkpoint-handler edits
# once the job server runs a Beam release with the upstream fix whose Flink runner and job
# service resolve through Maven here (runtime.versions; docs/runtime.md).
# The `BeamFnDataOutboundAggregator` edit has no upstream issue yet (upstream's current
# source is the same): it can go once Beam shuts the flush executor down in `discard()`.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from fleetstream.runtime import versions


class PatchError(RuntimeError):
    """The patched classes could not be built (a tool is missing, or an edit no longer applies)."""

_HANDLERS = "org/apache/beam/runners/fnexecution/control/BundleCheckpointHandlers.java"
_OPERATOR = ("org/apache/beam/runners/flink/translation/wrappers/streaming/"
             "ExecutableStageDoFnOperator.java")
_AGGREGATOR = "org/apache/beam/sdk/fn/data/BeamFnDataOutboundAggregator.java"

#: source file -> (the Maven artifact holding it, [(text, replacement), ...])
EDITS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    _HANDLERS: ("beam-runners-java-fn-execution", [
        ("import org.apache.beam.sdk.coders.Coder;\n",
         "import org.apache.beam.sdk.coders.Coder;\n"
         "import org.apache.beam.sdk.coders.StringUtf8Coder;\n"
         "import org.apache.beam.runners.core.StateTag;\n"
         "import org.apache.beam.sdk.state.MapState;\n"),
        ("    @Override\n    public void onCheckpoint(",
         "    /** One map state per key and window holds every residual, by checkpoint id. */\n"
         "    public static <T> StateTag<MapState<String, WindowedValue<T>>> residualStateTag(\n"
         "        Coder<WindowedValue<T>> residualCoder) {\n"
         "      return StateTags.map(\"sdf_checkpoint_residuals\", StringUtf8Coder.of(),"
         " residualCoder);\n"
         "    }\n\n"
         "    @Override\n    public void onCheckpoint("),
        (".state(stateNamespace, StateTags.value(tag, residualCoder))\n                .write(",
         ".state(stateNamespace, residualStateTag(residualCoder))\n                .put(tag, "),
    ]),
    _OPERATOR: ("beam-runners-flink-" + versions.FLINK_MINOR, [
        # a build-time annotation whose jar is not among the runtime jars
        ("import edu.umd.cs.findbugs.annotations.SuppressFBWarnings;\n", ""),
        ('@SuppressFBWarnings("SE_TRANSIENT_FIELD_NOT_RESTORED")\n', ""),
        ("import org.apache.beam.sdk.state.BagState;\n",
         "import org.apache.beam.sdk.state.BagState;\n"
         "import org.apache.beam.sdk.state.MapState;\n"),
        ("        WindowedValue stateValue =\n            keyedStateInternals.state(namespace, "
         "StateTags.value(timerId, residualCoder)).read();\n",
         "        MapState<String, WindowedValue<InputT>> residuals =\n"
         "            keyedStateInternals.state(\n                namespace, "
         "StateAndTimerBundleCheckpointHandler.residualStateTag(residualCoder));\n"
         "        WindowedValue stateValue = residuals.get(timerId).read();\n"
         "        residuals.remove(timerId);\n"),
    ]),
    # with data_buffer_time_limit_ms each bundle's aggregator starts an executor of its own
    # and discard() only cancels its task: one idle thread left per bundle, for good
    _AGGREGATOR: ("beam-sdks-java-core", [
        ("import java.util.concurrent.ScheduledFuture;\n",
         "import java.util.concurrent.ScheduledExecutorService;\n"
         "import java.util.concurrent.ScheduledFuture;\n"),
        ("  @Nullable @VisibleForTesting ScheduledFuture<?> flushFuture;\n",
         "  @Nullable @VisibleForTesting ScheduledFuture<?> flushFuture;\n"
         "  private @Nullable ScheduledExecutorService flushExecutor;\n"),
        ("      this.flushFuture =\n          Executors.newSingleThreadScheduledExecutor(",
         "      this.flushExecutor =\n          Executors.newSingleThreadScheduledExecutor("),
        ("                      .build())\n              .scheduleAtFixedRate(",
         "                      .build());\n      this.flushFuture =\n"
         "          flushExecutor.scheduleAtFixedRate("),
        ("      flushFuture.cancel(true);\n    }\n",
         "      flushFuture.cancel(true);\n    }\n"
         "    if (flushExecutor != null) {\n      flushExecutor.shutdownNow();\n    }\n"),
    ]),
}


def patched_jar(beam_lib: Path, cache_dir: Path, java: str) -> Path:
    """The jar of the rebuilt classes, compiled against the jars in `beam_lib` with the
    `javac` beside `java` (else the one on PATH), kept under `cache_dir`."""
    # named after the edits, so that changed edits build a new jar
    digest = hashlib.sha256(repr(sorted(EDITS.items())).encode()).hexdigest()[:8]
    jar = cache_dir / f"beam-{versions.BEAM}-patches" / f"fixes-{digest}.jar"
    if jar.exists():
        return jar
    with tempfile.TemporaryDirectory() as work:
        sources = [_patched_source(Path(work) / "src", path, artifact, edits)
                   for path, (artifact, edits) in EDITS.items()]
        classes = Path(work) / "classes"
        _run([_javac(java), "-nowarn", "-proc:none", "-cp", f"{beam_lib}/*", "-d", str(classes),
              *map(str, sources)], "compile the patched Beam classes")
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w") as archive:
            for compiled in sorted(classes.rglob("*.class")):
                archive.write(compiled, compiled.relative_to(classes).as_posix())
        partial.replace(jar)
    return jar


def _patched_source(root: Path, path: str, artifact: str,
                    edits: list[tuple[str, str]]) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(apply_edits(path, _source(artifact, path), edits))
    return target


def apply_edits(path: str, text: str, edits: list[tuple[str, str]]) -> str:
    """`text` with each (old, new) applied; PatchError unless each old occurs exactly once."""
    for old, new in edits:
        if text.count(old) != 1:
            raise PatchError(f"cannot patch {path} of Beam {versions.BEAM}: expected text "
                               f"not found once: {old.strip()[:80]!r}")
        text = text.replace(old, new)
    return text


def _source(artifact: str, path: str) -> str:
    """One file of `org.apache.beam:<artifact>:<BEAM>`'s sources jar, fetched through Maven."""
    coordinates = f"org.apache.beam:{artifact}:{versions.BEAM}:jar:sources"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PatchError("mvn was not found: install Maven (`apt-get install -y maven`)")
    _run([mvn, "-q", "-B", "dependency:get", f"-Dartifact={coordinates}", "-Dtransitive=false"],
         f"fetch {coordinates} through Maven")
    jar = (Path.home() / ".m2" / "repository" / "org" / "apache" / "beam" / artifact /
           versions.BEAM / f"{artifact}-{versions.BEAM}-sources.jar")
    with zipfile.ZipFile(jar) as archive:
        return archive.read(path).decode()


def _javac(java: str) -> str:
    """The JDK compiler beside `java` (the one servers run with), else the one on PATH."""
    beside = Path(java).resolve().with_name("javac")
    found = str(beside) if beside.exists() else shutil.which("javac")
    if found is None:
        raise PatchError("javac was not found: the job server's patched Beam classes are "
                           "compiled here; install a JDK 17 (`apt-get install -y "
                           "openjdk-17-jdk-headless`) or set JAVA_HOME to one")
    return found


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PatchError(f"could not {what}:\n{(result.stdout + result.stderr)[-2000:]}")
