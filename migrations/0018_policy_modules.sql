-- A policy-set version made from a manifest of several policy versions (issue 14): `rego` holds the
-- first module, `extra_modules` the others in manifest order; the STS compiles them together in
-- `package caracal.authz` (docs/policy.md, "Named policies and manifests").

ALTER TABLE policy_set_versions ADD COLUMN extra_modules text[] NOT NULL DEFAULT '{}';
