"""FlatcarMicroCloud's policy pack (CrossGuard, Python): `pulumi preview --policy-pack policy`.

The checks are pure functions in ``rules.py`` (unit-tested); this file only
registers them. What the engine's resource validation cannot see here is
said in docs/policies.md: it has no step operation (create, replace,
delete) and gets secrets already unwrapped, so replacement and secret
checks need the preview's own JSON instead.
"""

from pulumi_policy import EnforcementLevel, PolicyPack, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy
from pulumi_policy.proxy import UnknownValueError

import rules


def _validate(check):
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        provider = args.provider.name if args.provider is not None else None
        # The props proxy raises on a value not known until `up` (a seed volume's
        # path, an Ignition config): read only what a check needs, and leave a
        # value that is unknown now to the `up` that knows it.
        try:
            for message in check(args.resource_type, args.name, args.props, provider):
                report(message)
        except UnknownValueError:
            pass

    return validate


PolicyPack(
    name="microcloud",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="explicit-kubernetes-provider",
            description="Every Kubernetes resource goes through the stack's one explicit provider, never a default one.",
            validate=_validate(rules.explicit_kubernetes_provider),
        ),
        ResourceValidationPolicy(
            name="pinned-versions",
            description="Charts, OS images and container images name an exact version: no `latest`, no range, no floating tag.",
            validate=_validate(rules.pinned_versions),
        ),
    ],
)
