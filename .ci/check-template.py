#!/usr/bin/env python3
"""Checks on template.yaml that cfn-lint does not make.

cfn-lint (1.54 and later validate SAM templates without running the SAM
transform) lets invalid values inside AWS::Serverless::Function pass
silently: `Runtime: provided.al2023023` or `InvokeMode: RESPONSE_STREAMX` lint
clean, and so does a `!GetAtt` on a resource that SAM would not generate. This
script asserts what this project relies on:

* every AWS::Serverless::Function, merged with Globals.Function the way SAM
  merges them, runs provided.al2023 / bootstrap / arm64;
* it is built by cargo-lambda (Metadata.BuildMethod rust-cargolambda) from a
  `Binary` that is one of the api bins (`[[bin]]` with a path under api/) of
  the Cargo.toml at its CodeUri;
* its Function URL streams (InvokeMode RESPONSE_STREAM) and the proxy is not
  told to run buffered (GIGACHAT_PROXY_LAMBDA_STREAMING);
* every credential-like parameter (name contains Credential or Secret) is
  NoEcho;
* every `!GetAtt`/`${X.Attr}` names a declared resource or one SAM generates.

Usage: check-template.py [TEMPLATE [ROOT]]
  TEMPLATE defaults to template.yaml at the repo root; CodeUri is resolved
  against ROOT, which defaults to the template's folder.
Exits 1 and prints one line per failed check.
"""

from __future__ import annotations

import re
import sys
import tomllib
from copy import deepcopy
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # pragma: no cover - environment problem, not a template problem
    sys.exit("check-template.py needs PyYAML: run .ci/setup and use .venv/bin/python (or pip install pyyaml)")

REPO = Path(__file__).resolve().parent.parent

EXPECTED_RUNTIME = "provided.al2023"
EXPECTED_HANDLER = "bootstrap"
EXPECTED_ARCHITECTURES = ["arm64"]
EXPECTED_BUILD_METHOD = "rust-cargolambda"
EXPECTED_INVOKE_MODE = "RESPONSE_STREAM"
CREDENTIAL_NAME = re.compile(r"credential|secret", re.IGNORECASE)


# --- YAML with CloudFormation short-form tags -------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref X`, `!GetAtt A.B`, `!Sub ...` and the other
    short forms into their long JSON forms ({"Ref": X}, {"Fn::GetAtt": [A, B]})."""


def _construct_cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


# --- SAM Globals ---------------------------------------------------------------


def merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's rules: maps merge (local keys win), lists concatenate
    (global first), anything else: local wins."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _is_intrinsic(global_value) or _is_intrinsic(local_value):
            return deepcopy(local_value)
        merged = deepcopy(global_value)
        for key, value in local_value.items():
            merged[key] = merge_globals(global_value[key], value) if key in global_value else deepcopy(value)
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return deepcopy(global_value) + deepcopy(local_value)
    return deepcopy(local_value)


def _is_intrinsic(value: dict) -> bool:
    if len(value) != 1:
        return False
    key = next(iter(value))
    return key in {"Ref", "Condition"} or (isinstance(key, str) and key.startswith("Fn::"))


# --- Cargo ---------------------------------------------------------------------


def api_bins(cargo_toml: Path) -> list[str]:
    """Names of the `[[bin]]` targets whose path lies under api/."""
    with cargo_toml.open("rb") as f:
        manifest = tomllib.load(f)
    bins = manifest.get("bin", [])
    return [
        b["name"]
        for b in bins
        if isinstance(b, dict) and "name" in b and str(b.get("path", "")).replace("\\", "/").startswith("api/")
    ]


# --- checks --------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def check(self, ok: bool, what: str, detail: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"FAIL {what}: {detail}")


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def sam_generated_ids(resources: dict[str, Any]) -> set[str]:
    """Logical ids the SAM transform adds for the functions declared here."""
    generated: set[str] = set()
    for name, res in resources.items():
        if not isinstance(res, dict) or res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties") or {}
        if "Role" not in props:
            generated.add(f"{name}Role")
        if "FunctionUrlConfig" in props:
            generated |= {f"{name}Url", f"{name}UrlPublicPermissions", f"{name}URLInvokeAllowPublicAccess"}
        if "AutoPublishAlias" in props:
            generated |= {f"{name}Alias{props['AutoPublishAlias']}", f"{name}Version"}
    return generated


def getatt_targets(node: Any) -> list[str]:
    """Resources named by Fn::GetAtt and by `${X.Attr}` inside Fn::Sub."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::GetAtt":
                if isinstance(value, list) and value and isinstance(value[0], str):
                    found.append(value[0])
                elif isinstance(value, str):
                    found.append(value.split(".", 1)[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) and value else value
                if isinstance(text, str):
                    found += [m.group(1) for m in re.finditer(r"\$\{([A-Za-z0-9]+)\.[A-Za-z0-9.]+\}", text)]
            found += getatt_targets(value)
    elif isinstance(node, list):
        for item in node:
            found += getatt_targets(item)
    return found


def check_template(template_path: Path, root: Path) -> Report:
    report = Report()
    with template_path.open(encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(template, dict):
        report.check(False, str(template_path), "not a YAML mapping")
        return report

    resources = template.get("Resources") or {}
    global_function = (template.get("Globals") or {}).get("Function") or {}
    functions = {
        name: res
        for name, res in resources.items()
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function"
    }
    report.check(bool(functions), "template", "declares no AWS::Serverless::Function")

    for name, res in functions.items():
        props = merge_globals(global_function, res.get("Properties") or {})
        metadata = res.get("Metadata") or {}

        runtime = props.get("Runtime")
        report.check(runtime == EXPECTED_RUNTIME, f"{name}.Runtime", f"is {runtime!r}, expected {EXPECTED_RUNTIME!r}")
        handler = props.get("Handler")
        report.check(handler == EXPECTED_HANDLER, f"{name}.Handler", f"is {handler!r}, expected {EXPECTED_HANDLER!r}")
        arch = props.get("Architectures")
        report.check(
            arch == EXPECTED_ARCHITECTURES,
            f"{name}.Architectures",
            f"is {arch!r} (after merging Globals), expected {EXPECTED_ARCHITECTURES!r}",
        )

        method = metadata.get("BuildMethod")
        report.check(
            method == EXPECTED_BUILD_METHOD,
            f"{name}.Metadata.BuildMethod",
            f"is {method!r}, expected {EXPECTED_BUILD_METHOD!r}",
        )
        code_uri = props.get("CodeUri")
        cargo_toml = root / str(code_uri) / "Cargo.toml" if isinstance(code_uri, str) else None
        if cargo_toml is None or not cargo_toml.is_file():
            report.check(False, f"{name}.CodeUri", f"is {code_uri!r}; no Cargo.toml at {cargo_toml}")
        else:
            report.check(True, f"{name}.CodeUri", "")
            bins = api_bins(cargo_toml)
            binary = (metadata.get("BuildProperties") or {}).get("Binary")
            report.check(
                binary in bins,
                f"{name}.Metadata.BuildProperties.Binary",
                f"is {binary!r}, expected one of the api bins of {cargo_toml}: {bins}",
            )

        url_config = props.get("FunctionUrlConfig") or {}
        invoke_mode = url_config.get("InvokeMode")
        report.check(
            invoke_mode == EXPECTED_INVOKE_MODE,
            f"{name}.FunctionUrlConfig.InvokeMode",
            f"is {invoke_mode!r}, expected {EXPECTED_INVOKE_MODE!r}",
        )
        env = ((props.get("Environment") or {}).get("Variables")) or {}
        streaming = env.get("GIGACHAT_PROXY_LAMBDA_STREAMING", "true")
        report.check(
            not (isinstance(streaming, (str, bool)) and str(streaming).strip().lower() in {"false", "0", "no", "off"}),
            f"{name}.Environment.GIGACHAT_PROXY_LAMBDA_STREAMING",
            f"is {streaming!r}, but a RESPONSE_STREAM Function URL needs the streaming handler "
            "(a buffered handler behind it, or the reverse, returns an empty body)",
        )

    for name, param in (template.get("Parameters") or {}).items():
        if CREDENTIAL_NAME.search(name):
            no_echo = isinstance(param, dict) and truthy(param.get("NoEcho"))
            report.check(no_echo, f"Parameters.{name}", "looks like a credential but is not `NoEcho: true`")

    known = set(resources) | sam_generated_ids(resources)
    for target in getatt_targets({"Resources": resources, "Outputs": template.get("Outputs") or {}}):
        report.check(
            target in known,
            f"GetAtt {target}",
            f"names no resource declared here or generated by SAM (known: {sorted(known)})",
        )

    return report


def main(argv: list[str]) -> int:
    template_path = (Path(argv[1]) if len(argv) > 1 else REPO / "template.yaml").resolve()
    root = Path(argv[2]).resolve() if len(argv) > 2 else template_path.parent
    try:
        report = check_template(template_path, root)
    except (OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        print(f"FAIL {template_path}: {e}", file=sys.stderr)
        print("template check: 0 passed, 1 failed")
        return 1
    for line in report.failures:
        print(line, file=sys.stderr)
    print(f"template check: {report.passed} passed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
