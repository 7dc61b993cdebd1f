# The built-in decision contract of grant data documents (docs/policy.md, "Grant documents"). A
# policy version whose source begins with `# caracal:data-document` declares only data — `app_ids`
# ({application id: binding key}) and `grants` ({resource identifier: {application, roles: {role:
# [scopes]}}}), as the published admin client's `ensure_grants` renders them — and is evaluated
# together with this module, which decides from that data.
package caracal.authz

import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": ["caracal-grants"], "diagnostics": [{"reason": "no_grant"}]}

granted_result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["caracal-grants"], "diagnostics": []}

# The application's binding key; an application the document does not name has none.
app := app_ids[input.principal.id]

# A role is the binding key (the application id by default) or one of the application's traits.
labels := {app} | {t | some t in input.principal.traits}

entry := grants[input.resource.identifier]

granted contains s if {
	some role, scopes in entry.roles
	role in labels
	some s in scopes
}

# The resource's owning application may bootstrap its governed transport on it.
granted contains "agent:lifecycle" if entry.application == app

requested := {s | some s in input.context.requested_scopes}

# A session mint naming no resource: any application the document binds.
result := granted_result if {
	input.resource == null
	app
}

# Every requested scope granted on the resource.
result := granted_result if {
	entry
	count(requested - granted) == 0
}
