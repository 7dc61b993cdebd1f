-- Step-up holds a policy reserves for the subject (`approver: subject`): the federated user the
-- request acts for decides it with their own session mandate (`POST /approvals/{id}/decision`, the
-- SDK's `decide_approval`); an operator cannot.

ALTER TABLE step_up_approvals DROP CONSTRAINT step_up_approvals_approver_check;
ALTER TABLE step_up_approvals ADD CONSTRAINT step_up_approvals_approver_check CHECK (approver IN ('operator', 'any', 'subject'));
