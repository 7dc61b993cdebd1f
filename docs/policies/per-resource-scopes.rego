package caracal.authz

import rego.v1

# The local demo's policy (deploy/local/up.sh): session mandates for the demo application, and mandates for the echo
# resource within its declared scopes. Everything else is denied with a reason.

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["demo-session"], "diagnostics": []} if {
	input.action.use == "session"
	input.principal.type == "Application"
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["demo-echo"], "diagnostics": []} if {
	input.action.use != "session"
	input.resource.identifier == "https://echo.local"
	every s in input.context.requested_scopes { s in input.resource.scopes }
}
