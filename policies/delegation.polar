# Company -> firm: the delegation and what it gives the firm's manager.

# A firm holds on a company exactly the delegable rights of its delegation in force.
firm_holds(firm_siret: String, right: String, company: Company, now) if
    delegable(right) and
    delegation in company.delegations and
    delegation.firm = firm_siret and
    in_force(delegation, now) and
    right in delegation.scope;

# The firm's manager holds what the firm holds.
holds_right(user: User, right: String, company: Company, "firm_manager") if
    firm in user.manages and
    firm_holds(firm, right, company, user.now);

# The designating company's admins read, narrow, widen and revoke a delegation.
has_permission(user: User, action: String, delegation: Delegation) if
    action in ["read", "change", "revoke"] and
    delegation.company in user.admin_of;

# The firm's manager may read the delegation and renounce it.
has_permission(user: User, action: String, delegation: Delegation) if
    action in ["read", "revoke"] and
    delegation.firm != nil and
    delegation.firm in user.manages;

# Only the person named by e-mail at designation may activate it.
has_permission(user: User, "activate", delegation: Delegation) if
    delegation.manager_email = user.email;

# A company may hand a firm only delegable rights.
may_delegate(right: String) if delegable(right);
