package caracal.authz

import rego.v1

# Step-up: writes need an operator's approval. Requesting any scope ending in ".write" turns the
# allow into a step-up (docs/policy.md, "Step-up"): the STS holds the mint and answers 401
# interaction_required until an operator approves exactly that request. Reads are allowed within
# the resource's declared scopes; sessions for any application.

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

writes := [s | some s in input.context.requested_scopes; endswith(s, ".write")]

within_declared_scopes if {
	input.resource != null
	every s in input.context.requested_scopes { s in input.resource.scopes }
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["sessions"], "diagnostics": []} if {
	input.action.use == "session"
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["reads"], "diagnostics": []} if {
	input.action.use != "session"
	within_declared_scopes
	count(writes) == 0
}

result := {
	"decision": "allow",
	"evaluation_status": "complete",
	"determining_policies": ["writes-need-approval"],
	"diagnostics": [{"step_up_required": {"type": "human_approval", "tiers": [{"tier": "writes", "approver": "operator", "ttl_seconds": 600}]}}],
} if {
	input.action.use != "session"
	within_declared_scopes
	count(writes) > 0
}
