"""The shape of a (user, company) pair, coarser than ``authz.shapes``: for impact
reports, and for the engine's decision memo when the policy allows it.

``authz.shapes`` keeps the order of identifiers, since an opaque policy may still
compare two identifiers with ``<``. On real data that order is noise (random link ids,
SIRETs, e-mails) and multiplies the shapes of a national store by ten. ``shape``
keeps only which identifiers are equal, and the scopes apart, so that a report can
also share a question about one right between pairs whose scopes agree on it. Both
are sound only for the policies ``authz.policy_reading`` reads as blind to them.
"""

from __future__ import annotations

from collections.abc import Hashable

from authz import model

Scope = frozenset[str]
Shape = tuple[Hashable, tuple[Scope, ...]]


def shape(user: model.User, company: model.Company) -> Shape:
    """The shape of the facts a decision by ``user`` on ``company`` loads.

    Those facts are ``store.reaching(company, user)``: the links of ``company`` to the
    user's firms, and the user's own grants; ``company`` may hold more links, which
    are left out here the same way. The shape is the facts up to a renaming of
    identifiers and an order-keeping renaming of instants, as a skeleton and the
    scopes it refers to by position: two pairs with equal skeletons and scopes have
    the same facts under such renamings; equal skeletons with scopes that agree on
    ``r in scope`` ask the same question about right ``r``.

    Links are put in a fixed order before identifiers are named in order of
    appearance; ties keep the store's order of identifiers, which can only split a
    shape in two, never merge two.
    """
    email = user.email
    admin_of, manages, collaborates = user.admin_of, user.manages, user.collaborates
    delegations: list[model.Delegation] = []
    grants: list[model.Grant] = []
    if admin_of or manages or collaborates:
        firms = manages | collaborates if manages and collaborates else manages or collaborates
        if firms and company.delegations:
            delegations = [d for d in company.delegations if d.firm in firms]
            if len(delegations) > 1:
                delegations.sort(key=_delegation_order)
        if company.grants:
            grants = [g for g in company.grants if g.collaborator == email]
            if len(grants) > 1:
                grants.sort(key=_grant_order)
    if not delegations and not grants:
        alone: dict[str | None, int] = {None: -1, email: 0}
        alone.setdefault(company.siret, 1)
        return (0, _memberships(user, alone)), ()
    identifiers: list[str | None] = [email, company.siret]
    states = []
    ends = []
    for d in delegations:
        identifiers += (d.id, d.company, d.manager_email, d.firm)
        states.append(d.status)
        ends.append(d.ends_at)
    for g in grants:
        identifiers += (g.id, g.firm, g.collaborator, g.company)
        states.append(g.status)
        ends.append(g.ends_at)
    names: dict[str | None, int] = {None: -1}
    name = names.setdefault
    labels = tuple([name(x, len(names)) for x in identifiers])
    dated = [end for end in ends if end is not None]
    ranks: tuple[int, ...] | int
    if dated:
        instants = sorted({user.now, *dated})
        ranks = tuple([-1 if end is None else instants.index(end) for end in ends])
        now = instants.index(user.now)
    else:
        ranks, now = len(ends), 0  # no end date: only the number of links counts
    skeleton = (now, _memberships(user, names), len(delegations), labels, tuple(states), ranks)
    return skeleton, tuple([d.scope for d in delegations] + [g.scope for g in grants])


def question(user: model.User, right: str, company: model.Company) -> Hashable | None:
    """What ``allow(user, right, company)`` depends on, for a policy read as blind to
    identifier order and reading scopes one right at a time: the shape, and whether each
    scope holds ``right``.

    None when ``company`` holds links ``user`` does not reach: the shape leaves them out,
    so it cannot stand for a question about them.
    """
    skeleton, scopes = shape(user, company)
    if len(scopes) != len(company.delegations) + len(company.grants):
        return None
    return right, skeleton, tuple([right in scope for scope in scopes])


def _memberships(user: model.User, names: dict[str | None, int]) -> tuple:
    """The user's admin_of, manages and collaborates, by the names given so far.

    Identifiers seen only there are anonymous: only which of the three hold each counts.
    """
    admin_of, manages, collaborates = user.admin_of, user.manages, user.collaborates
    groups: list[tuple] = []
    others: list[str] = []
    for group in (admin_of, manages, collaborates):
        if not group:
            groups.append(())
            continue
        labels = [names[x] for x in group if x in names]
        if len(labels) < len(group):
            others += [x for x in group if x not in names]
        groups.append(tuple(sorted(labels)) if len(labels) > 1 else tuple(labels))
    if others:
        groups.append(tuple(sorted((x in admin_of, x in manages, x in collaborates) for x in set(others))))
    return tuple(groups)


def _delegation_order(d: model.Delegation) -> tuple:
    return (d.status, d.ends_at is None, d.ends_at or 0.0, sorted(d.scope), d.firm or "", d.id)


def _grant_order(g: model.Grant) -> tuple:
    return (g.status, g.ends_at is None, g.ends_at or 0.0, sorted(g.scope), g.firm, g.id)
