"""Java for the local servers: find the `java` binary and fetch jar bundles.

A bundle is a folder of jars resolved by Maven from a few coordinates, the
same way a build would: a tiny pom under `$FLEETSTREAM_HOME/java/<name>/` and
`mvn dependency:copy-dependencies` into its `lib/`. Servers then run with
`java -cp '<lib>/*' <MainClass>`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from fleetstream.dev.service import ServiceError, home

#: what Flink and Beam on Java 17 need opened (Kryo and Java serialization)
JAVA17_OPENS: tuple[str, ...] = tuple(
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in ("java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio",
                    "java.text", "java.time", "java.util", "java.util.concurrent",
                    "java.util.concurrent.atomic", "java.util.concurrent.locks",
                    "sun.nio.ch"))


def java_bin() -> str:
    """The `java` to run servers with: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ServiceError("java was not found: install a JDK 17 (`apt-get install -y "
                           "openjdk-17-jdk-headless`) or set JAVA_HOME")
    return found


def _pom(name: str, coordinates: Sequence[str], exclusions: Sequence[str]) -> str:
    excluded = "".join(
        f"<exclusion><groupId>{group}</groupId><artifactId>{artifact}</artifactId></exclusion>"
        for group, artifact in (exclusion.split(":") for exclusion in exclusions))
    dependencies = []
    for coordinate in coordinates:
        group, artifact, version = coordinate.split(":")
        dependencies.append(f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}"
                            f"</artifactId><version>{version}</version>"
                            f"<exclusions>{excluded}</exclusions></dependency>")
    return ("<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n"
            "  <modelVersion>4.0.0</modelVersion>\n"
            f"  <groupId>fleetstream.local</groupId><artifactId>{name}</artifactId>"
            "<version>1</version><packaging>pom</packaging>\n"
            "  <dependencies>\n" + "\n".join(dependencies) + "\n  </dependencies>\n</project>\n")


def jar_bundle(name: str, coordinates: Sequence[str], exclusions: Sequence[str] = ()) -> Path:
    """The lib folder holding `coordinates` (group:artifact:version) and their runtime deps.

    `exclusions` (group:artifact, `*` allowed) are left out of every dependency's
    tree. Fetched once; a later call with the same arguments returns at once.
    """
    folder = home() / "java" / name
    lib = folder / "lib"
    pom = _pom(name, coordinates, exclusions)
    done = folder / "resolved.pom"
    if done.exists() and done.read_text() == pom:
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("mvn was not found: install Maven (`apt-get install -y maven`)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_text(pom)
    shutil.rmtree(lib, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(folder / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"could not fetch the jars of {name} ({', '.join(coordinates)}) "
                           f"through Maven:\n{(result.stdout + result.stderr)[-2000:]}")
    done.write_text(pom)
    return lib


def java_command(lib: Path, main_class: str, *args: str, jvm_options: Sequence[str] = (),
                 jars_first: Sequence[Path] = ()) -> list[str]:
    """`java <jvm_options> -cp '<jars_first>:<lib>/*' <main_class> <args>`."""
    classpath = os.pathsep.join([*map(str, jars_first), f"{lib}/*"])
    return [java_bin(), *jvm_options, "-cp", classpath, main_class, *args]
