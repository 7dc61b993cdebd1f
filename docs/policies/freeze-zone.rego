package caracal.authz

import rego.v1

# Freezes a zone: every exchange is denied with a reason the STS relays to the client.

result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["freeze-zone"], "diagnostics": [{"reason": "frozen_by_test"}]}
