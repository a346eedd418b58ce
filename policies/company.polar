# The member company and its own admins.

# Company admins hold every right on their company, delegable or not: delegating
# never takes rights away from the company itself.
holds_right(user: User, right: String, company: Company, "company_admin") if
    right(right) and
    company.siret in user.admin_of;

# Admins manage their company's space: read it, manage its admins, designate
# firms, list delegations, read its audit log. These are acts on the space, not
# rights on the company, so a decision about a right can never match them.
has_permission(user: User, action: String, space: CompanySpace) if
    action in ["read", "manage_admins", "designate", "list_delegations", "read_audit"] and
    space.siret in user.admin_of;
