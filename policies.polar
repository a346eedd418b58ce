# Entry policy of the authorization service.
#
# The engine asks one question: allow(actor, action, resource).
#   - decisions:  allow(User, "<right>", Company)
#   - management: allow(User, "<action>", CompanySpace | Firm | Delegation | Grant)
#   - API access: allow(ApiKey, "call", "<area>")
# Facts (the User, Company, ... objects) are snapshots taken at instant user.now.

allow(actor, action, resource) if has_permission(actor, action, resource);

actor User {}
resource Company {}
resource CompanySpace {}
resource Firm {}
resource Delegation {}
resource Grant {}

# ---- Rights: what a user may do for a company --------------------------------
# Adding a right is adding a line here (and to delegable if a firm may hold it).
right("declarations");   # DSN returns, the fund's reports, corrections
right("cotisations");    # account statements, payment calls, online payment
right("compte");         # read-only view of the member account and history
right("salaries");       # hires and leavers
right("conges");         # paid-leave certificates and requests
right("intemperies");    # bad-weather stoppages and refund claims
right("attestations");   # certificates of good standing / affiliation
right("entreprise");     # company profile and bank details (fraud-sensitive)

# Rights a company may hand to a firm. `entreprise` is absent on purpose:
# bank details are the classic target of payment-diversion fraud, so they stay home.
delegable("declarations");
delegable("cotisations");
delegable("compte");
delegable("salaries");
delegable("conges");
delegable("intemperies");
delegable("attestations");

# A right is held if one of the links below gives it (the third argument of
# holds_right names the rule, for /v1/explain and the decision's reason).
has_permission(user: User, right: String, company: Company) if
    right(right) and
    holds_right(user, right, company, _rule);

# A link (delegation or grant) is in force while active and before its end date.
in_force(link, now) if
    link.status = "active" and
    not lapsed(link, now);

lapsed(link, now) if
    link.ends_at != nil and
    link.ends_at <= now;
