"""singer-sdk's standard target tests, for the ones that apply to these targets.

Both targets accept only their own streams (Chargebee's resources; the webshop's) and refuse
any other stream at its SCHEMA message, naming it, so a misspelt map cannot write nowhere.
The SDK's data tests (`test_camelcase`, `test_array_data`, … streams) therefore do not apply;
what does: printing version and --about, and refusing a RECORD before its SCHEMA."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from singer_sdk.testing import get_target_test_class
from singer_sdk.testing.suites import SingerTestSuite
from singer_sdk.testing.target_tests import TargetCliPrintsTest, TargetRecordBeforeSchemaTest

from target_chargebee.target import TargetChargebee
from target_customwebshop.target import TargetCustomwebshop
from tests.harness import CHARGEBEE_KEY, WEBSHOP_KEY, SharedSandbox

APPLICABLE = SingerTestSuite(
    kind="target", tests=[TargetCliPrintsTest, TargetRecordBeforeSchemaTest]
)

_DIR = Path(tempfile.mkdtemp(prefix="target-standard-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
# addresses at import, for the classes' config; the servers start with the first test
CHARGEBEE = SharedSandbox("chargebee", CHARGEBEE_KEY)
chargebee_sandbox = CHARGEBEE.started()
WEBSHOP = SharedSandbox("customwebshop", WEBSHOP_KEY)
webshop_sandbox = WEBSHOP.started()


def standard_tests(target_class: type, api_url: str, api_key: str) -> type:
    config = {
        "api_url": api_url,
        "api_key": api_key,
        "link_store_url": f"sqlite:///{_DIR / 'links.db'}",
        "report_dir": str(_DIR / "reports"),
        # the far side of the pair the link store is bound to
        "webshop_api_url": WEBSHOP.url + "/api/v1",
        "chargebee_api_url": CHARGEBEE.url + "/api/v2",
    }
    return get_target_test_class(
        target_class, config=config, custom_suites=[APPLICABLE], include_target_tests=False
    )


TestTargetChargebee = standard_tests(TargetChargebee, CHARGEBEE.url + "/api/v2", CHARGEBEE_KEY)
TestTargetCustomwebshop = standard_tests(TargetCustomwebshop, WEBSHOP.url + "/api/v1", WEBSHOP_KEY)
