# The accounting firm: its manager, collaborators and their grants.

# The manager runs the firm's account: client list, collaborators, grants. An
# activation into an existing firm is also the manager's act.
has_permission(user: User, action: String, firm: Firm) if
    action in ["read_clients", "manage_collaborators", "grant", "activate_into"] and
    firm.manager_email = user.email;

# The manager reads, changes and revokes the firm's grants.
has_permission(user: User, action: String, grant: Grant) if
    action in ["read", "change", "revoke"] and
    grant.firm in user.manages;

# A collaborator holds a right on a company only if their grant in force has it
# AND their firm holds it now: narrowing or revoking upstream bites at once.
holds_right(user: User, right: String, company: Company, "collaborator_grant") if
    grant in company.grants and
    grant.collaborator = user.email and
    grant.firm in user.collaborates and
    in_force(grant, user.now) and
    right in grant.scope and
    firm_holds(grant.firm, right, company, user.now);

# No widening at write time: a manager may grant a right on a company only if the
# firm holds it there now. Collaborators never re-delegate (they manage no firm).
may_grant(user: User, right: String, firm: Firm, company: Company) if
    firm.siret in user.manages and
    firm_holds(firm.siret, right, company, user.now);
