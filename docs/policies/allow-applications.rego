package caracal.authz

import rego.v1

# Allows every exchange by an application for a resource the zone knows (and session mints).
# Useful to see the plumbing work; replace it with a real policy before real traffic.

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["allow-applications"], "diagnostics": []} if {
	input.principal.type == "Application"
}
