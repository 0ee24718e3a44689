"""huggingface_hub's own live-Hub tests, run against a Bastion started here; prints pass/fail counts.

Run from the repository root:
    .venv/bin/python -m bench.hf_upstream_suite [--tag v1.28.0] [-n 2] [-k EXPR] [--files test_hf_api.py ...]

The client's source at a released tag is taken from a local git mirror of huggingface/huggingface_hub
(`--git-dir`, `git archive <tag>`) into the work directory; nothing of it is kept in this repository.
Its tests read their Hub from `tests/testing_constants.py` (ENDPOINT_STAGING, USER, TOKEN, OTHER_USER,
OTHER_TOKEN, ENTERPRISE_*): that file is rewritten to name the Bastion started here, whose users, org
(`valid_org_hub`, "Dummy Hub Org") and tokens are created as those tests expect. Names the tests use that
Bastion refuses (`__DUMMY_HUB_USER__`: no leading underscore) are replaced by valid ones everywhere
the constants are read, so the tests compare with what they created.

Which tests count: a small pytest plugin records, per test, whether it connected to this Bastion and
whether it tried any other host (huggingface.co, hub-ci, a CDN, a provider): every other host is
refused at name resolution, so nothing leaves the machine. A test counts as *live* when it reached
Bastion and tried no other host; tests that tried another host "need huggingface.co" and are listed
apart, offline unit tests (no connection at all) are not counted. The tag's own library (`src/`) is
the one imported, so tests and client agree.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import httpx

from tests.conftest import BastionServer, ClamdServer  # the one way to start a server (sets HF_* env: undone below)

DEFAULT_GIT_DIR = "/work/.mirror/huggingface+huggingface_hub/repo"
# The test modules that talk to a Hub (they use the `api`/`repo_factory` fixtures or the staging
# constants). Inference (providers, huggingface.co) and telemetry (mocked) modules are left out.
LIVE_MODULES = [
    "test_auth.py", "test_cache_layout.py", "test_cache_no_symlinks.py", "test_cli.py", "test_cli_discussions.py",
    "test_commit_api.py", "test_commit_scheduler.py", "test_copy_files.py", "test_file_download.py",
    "test_hf_api.py", "test_hf_file_system.py", "test_hub_mixin.py", "test_hub_mixin_pytorch.py", "test_lfs.py",
    "test_repocard.py", "test_snapshot_download.py", "test_upload_large_folder.py", "test_xet_download.py",
    "test_xet_upload.py", "test_buckets.py", "test_buckets_cli.py", "test_buckets_hf_file_system.py",
    "test_kernels.py", "test_oauth.py",
]
USER, OTHER_USER, ORG = "dummy-hub-user", "DVUser", "valid_org_hub"
ENTERPRISE_USER, ENTERPRISE_ORG = "EnterpriseAdmin", "EnterpriseOrgPrivate"

PLUGIN = '''
"""Per test: did it reach Bastion, which other hosts did it try (refused here)?

A fixture of a wider scope (class, module, session) runs once, in the setup of the first test that uses it,
and its result (or its error) is reused by the others: what it reached counts for every test that uses it,
so a test that fails on a shared fixture's cached error is counted where the fixture failed."""
import os
import socket

import httpx
import pytest

_PORT = int(os.environ["BASTION_UPSTREAM_PORT"])
_LOCAL = {"127.0.0.1", "localhost", "::1"}
_BASTION = "<bastion>"
_contacts = []  # every contact of this worker, in order: _BASTION or another host name
_test_start = [0]
_fixture_contacts = {}  # id(fixturedef) of a wider-scoped fixture -> the contacts its setup made
_getaddrinfo = socket.getaddrinfo


def _guarded(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name and name not in _LOCAL:
        _contacts.append(name)
        raise socket.gaierror(socket.EAI_NONAME, f"no network outside Bastion in this run: {name}")
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _guarded


def _note(url):
    if url.host in _LOCAL and url.port == _PORT:
        _contacts.append(_BASTION)
    elif url.host not in _LOCAL:
        _contacts.append(url.host)


# Requests go over pooled connections (no new name lookup per test): each one is noted here.
_send, _asend = httpx.Client.send, httpx.AsyncClient.send


def _client_send(self, request, *args, **kwargs):
    _note(request.url)
    return _send(self, request, *args, **kwargs)


async def _async_send(self, request, *args, **kwargs):
    _note(request.url)
    return await _asend(self, request, *args, **kwargs)


httpx.Client.send, httpx.AsyncClient.send = _client_send, _async_send


def pytest_configure(config):
    # Markers of plugins this run does not install (cassette replays, async tests): such tests are
    # either offline or need huggingface.co, and are not counted either way.
    config.addinivalue_line("markers", "vcr: pytest-vcr cassette (not installed here)")
    config.addinivalue_line("markers", "asyncio: pytest-asyncio test (not installed here)")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    start = len(_contacts)
    yield
    if fixturedef.scope != "function":
        _fixture_contacts[id(fixturedef)] = set(_contacts[start:])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _test_start[0] = len(_contacts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    if call.when == "teardown":
        reached = set(_contacts[_test_start[0]:])
        for defs in item._fixtureinfo.name2fixturedefs.values():
            for fixturedef in defs:
                reached |= _fixture_contacts.get(id(fixturedef), set())
        item.user_properties.append(("bastion", "1" if _BASTION in reached else "0"))
        item.user_properties.append(("external", ",".join(sorted(reached - {_BASTION}))))
        item.user_properties.append(("fixtures", ",".join(sorted(item.fixturenames))))
    yield
'''


def prepare_source(git_dir: str, tag: str, work: Path) -> Path:
    src = work / f"huggingface_hub-{tag}"
    if not (src / "tests").is_dir():
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", tag], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


def point_constants_at(src: Path, url: str, tokens: dict[str, str]) -> None:
    path = src / "tests" / "testing_constants.py"
    text = path.read_text()
    original = src / "tests" / "testing_constants.py.orig"
    if not original.exists():
        original.write_text(text)
    text = original.read_text()
    replacements = {
        "USER": USER, "FULL_NAME": "Dummy User", "TOKEN": tokens[USER], "OTHER_USER": OTHER_USER,
        "OTHER_TOKEN": tokens[OTHER_USER], "ENTERPRISE_USER": ENTERPRISE_USER, "ENTERPRISE_ORG": ENTERPRISE_ORG,
        "ENTERPRISE_TOKEN": tokens[ENTERPRISE_USER], "ENDPOINT_STAGING": url,
    }
    for name, value in replacements.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, count=1, flags=re.M)
        if count != 1:
            raise SystemExit(f"{path}: no `{name} = ...` line to point at Bastion")
    path.write_text(text)


def seed_accounts(server: BastionServer) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for name, fullname in ((USER, "Dummy User"), (OTHER_USER, "DV User"), (ENTERPRISE_USER, "Enterprise Admin")):
        server.cli("admin", "create-user", name, "--email", f"{name.lower()}@example.com", "--fullname", fullname)
        tokens[name] = server.cli("admin", "create-token", name, "--name", "ci", "--role", "write").stdout.strip()
    server.cli("admin", "create-org", ORG, "--owner", USER, "--fullname", "Dummy Hub Org")
    server.cli("admin", "create-org", ENTERPRISE_ORG, "--owner", ENTERPRISE_USER, "--fullname", "Enterprise Org")
    # The tests' Enterprise org creates private repos by default (test_create_repo_private_by_default): the
    # org's repository visibility policy "private", set by its admin as any admin would.
    httpx.put(f"{server.url}/api/organizations/{ENTERPRISE_ORG}/settings", json={"repoVisibility": "private"},
              headers={"authorization": f"Bearer {tokens[ENTERPRISE_USER]}"}, timeout=30).raise_for_status()
    return tokens


def child_env(src: Path, plugin_dir: Path, server: BastionServer, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "BASTION_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(src / "src"), str(plugin_dir)]),
        "HF_ENDPOINT": server.url, "HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "", "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "BASTION_UPSTREAM_PORT": str(server.port), "DISABLE_SYMLINKS_IN_WINDOWS_TESTS": "1",
    })
    return env


def run_pytest(src: Path, env: dict[str, str], modules: list[str], workers: int, keyword: str | None,
               junit: Path, timeout: int, log: Path) -> int:
    args = [sys.executable, "-m", "pytest", *[f"tests/{m}" for m in modules if (src / "tests" / m).exists()],
            "-p", "bastion_upstream_plugin", "-p", "no:cacheprovider", "-o", "addopts=",
            "-W", "error::FutureWarning", "--strict-markers", "-m", "not production and not inference",
            "-q", "-rN", "--tb=short", f"--timeout={timeout}", f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    if workers > 0:
        args += ["-n", str(workers)]
    if keyword:
        args += ["-k", keyword]
    with log.open("w") as out:  # the full output (tracebacks) stays in the work directory
        return subprocess.run(args, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=6 * 3600).returncode


# Hub features Bastion does not offer (their own products on huggingface.co, not the repo API):
# their tests are counted, and the rate without them is printed as well.
NOT_OFFERED = {
    "buckets": ("test_buckets", "Bucket", "bucket"),  # (also a test using a bucket fixture: `hf cp` to a bucket)
    "webhooks": ("TestWebhookApi",),
    "collections": ("Collection", "collection"),
    "jobs": ("TestJobs", "jobs", "Job"),
}


def not_offered(test_id: str) -> str | None:
    """`test_id` is `module::Class::name|fixture,fixture` (see summarize)."""
    return next((feature for feature, marks in NOT_OFFERED.items() if any(m in test_id for m in marks)), None)


def _route_shape(url: str) -> str:
    """A URL's path with generated names replaced: one group per route and error."""
    path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
    return "/".join("*" if re.search(r"\d", seg) else seg for seg in path.split("/"))


def reason_of(case: ET.Element) -> str | None:
    for tag in ("failure", "error"):
        node = case.find(tag)
        if node is not None:
            message = (node.get("message") or node.text or "").strip().splitlines()
            first = next((line for line in message if line.strip()), tag)
            first = re.sub(r"https?://[^\s'\"]+", lambda m: _route_shape(m.group(0)), first)
            first = re.sub(r"\(Request ID: [^)]*\)|[0-9a-f]{12,}|\d+", "#", first)
            return first[:220]
    return None


def summarize(junit: Path) -> dict[str, object]:
    cases = ET.parse(junit).getroot().iter("testcase")
    live_pass, live_fail, needs_hf, offline, skipped = [], defaultdict(list), [], 0, 0
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if feature := not_offered(f"{test_id}|{props.get('fixtures', '')}"):
            test_id = f"{test_id} [{feature}]"  # a test is set apart by its name or by the fixtures it uses
        if case.find("skipped") is not None:
            skipped += 1
            continue
        reason = reason_of(case)
        if props.get("external"):
            needs_hf.append((test_id, props["external"], reason))
        elif props.get("bastion") == "1":
            if reason is None:
                live_pass.append(test_id)
            else:
                live_fail[reason].append(test_id)
        else:
            offline += 1
    failed = sum(len(v) for v in live_fail.values())
    total = len(live_pass) + failed
    print(f"\nlive tests (reached Bastion only): {total}; passed {len(live_pass)}, failed {failed}"
          f" -> pass rate {100 * len(live_pass) / max(total, 1):.1f}%")
    offered_pass = [t for t in live_pass if not_offered(t) is None]
    offered_fail = {r: [t for t in ts if not_offered(t) is None] for r, ts in live_fail.items()}
    n_fail = sum(len(ts) for ts in offered_fail.values())
    apart: dict[str, list[str]] = defaultdict(list)
    for t in live_pass + [t for ts in live_fail.values() for t in ts]:
        if (feature := not_offered(t)) is not None:
            apart[feature].append(t)
    print(f"without the Hub features Bastion does not offer: {len(offered_pass) + n_fail}; passed "
          f"{len(offered_pass)}, failed {n_fail} -> pass rate "
          f"{100 * len(offered_pass) / max(len(offered_pass) + n_fail, 1):.1f}%")
    print("  set apart: " + ", ".join(f"{feature} {len(ts)}" for feature, ts in apart.items()))
    print(f"not counted: {len(needs_hf)} needed another host (huggingface.co ...), {offline} offline,"
          f" {skipped} skipped")
    print("\nfailures outside those features, grouped by first line of the error:")
    for reason, tests in sorted(offered_fail.items(), key=lambda kv: -len(kv[1])):
        if tests:
            print(f"\n  [{len(tests)}] {reason}")
            for test_id in sorted(tests):
                print(f"      {test_id}")
    print("\nfailures of the features Bastion does not offer:")
    for reason, tests in sorted(live_fail.items(), key=lambda kv: -len(kv[1])):
        if set_apart := [t for t in tests if not_offered(t) is not None]:
            print(f"  [{len(set_apart)}] {reason}")
    hosts: dict[str, int] = defaultdict(int)
    for _, external, _ in needs_hf:
        for host in external.split(","):
            hosts[host] += 1
    print("\nhosts the uncounted tests tried:", dict(sorted(hosts.items(), key=lambda kv: -kv[1])))
    return {"passed": len(live_pass), "failed": failed, "total": total}


def _start(server: BastionServer, attempts: int = 5) -> None:
    """Start the server, waiting longer than the tests' 60 s on a loaded machine (migrations and the scan
    workers' start share the CPU); a server that never answers is stopped, never left behind."""
    for attempt in range(attempts):
        try:
            if attempt == 0:
                server.start()
            else:  # still starting: keep waiting for the same process
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if server.proc is not None and server.proc.poll() is not None:
                        raise RuntimeError(server.server_log()[-3000:])
                    try:
                        if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.5)
                raise RuntimeError("not yet")
            return
        except RuntimeError:
            if attempt == attempts - 1 or (server.proc is not None and server.proc.poll() is not None):
                server.stop()
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="v1.28.0")
    parser.add_argument("--git-dir", default=DEFAULT_GIT_DIR, help="a git mirror of huggingface/huggingface_hub")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a new temporary one)")
    parser.add_argument("-n", "--workers", type=int, default=2)
    parser.add_argument("-k", "--keyword", default=None)
    parser.add_argument("--files", nargs="*", default=None, help="test modules (default: every live one)")
    parser.add_argument("--timeout", type=int, default=600, help="per test, seconds")
    parser.add_argument("--summary-only", type=Path, default=None, help="summarize an earlier junit XML and exit")
    args = parser.parse_args()
    if args.summary_only:
        summarize(args.summary_only)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bastion-hf-upstream-"))
    work.mkdir(parents=True, exist_ok=True)
    src = prepare_source(args.git_dir, args.tag, work)
    plugin_dir = work / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "bastion_upstream_plugin.py").write_text(PLUGIN)

    shutil.rmtree(work / "data", ignore_errors=True)  # each run starts from an empty Bastion
    (work / "clamd").mkdir(exist_ok=True)
    clamd = ClamdServer(work / "clamd").start()
    # The suite opens a few hundred pull requests and comments within minutes as one user: a CI account's
    # budget, not a person's (the default per-hour limits are Bastion's anti-spam setting, kept elsewhere).
    server = BastionServer(work / "data", env={"BASTION_CLAMD_ADDRESS": clamd.address,
                                               "BASTION_DISCUSSIONS_PER_HOUR": "100000",
                                               "BASTION_DISCUSSION_COMMENTS_PER_HOUR": "100000"})
    try:
        _start(server)
        point_constants_at(src, server.url, seed_accounts(server))
        junit = work / "junit.xml"
        print(f"huggingface_hub {args.tag} tests against Bastion at {server.url} (work: {work})", flush=True)
        run_pytest(src, child_env(src, plugin_dir, server, work / "hf-home"), args.files or LIVE_MODULES,
                   args.workers, args.keyword, junit, args.timeout, work / "pytest.log")
        summarize(junit)
    finally:
        server.stop()
        clamd.stop()


if __name__ == "__main__":
    main()
