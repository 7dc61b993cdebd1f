package caracal.authz

import rego.v1

# Least privilege by application trait: scopes come in families (`tools.read`, `tools.write`), an
# application may be granted scopes of a family only with the trait `grant:<family>`, and write
# scopes only with the trait `writer` as well. Session mints carry no scopes and are allowed.

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

family(scope) := split(scope, ".")[0]

granted(scope) if concat(":", ["grant", family(scope)]) in input.principal.traits

all_granted if {
	count(input.context.requested_scopes) > 0
	every s in input.context.requested_scopes {
		granted(s)
	}
}

writes if {
	some s in input.context.requested_scopes
	endswith(s, ".write")
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["agent-labels-session"], "diagnostics": []} if {
	input.action.use == "session"
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["agent-labels"], "diagnostics": []} if {
	input.action.use != "session"
	all_granted
	not writes
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["agent-labels-writer"], "diagnostics": []} if {
	input.action.use != "session"
	all_granted
	writes
	"writer" in input.principal.traits
}
