"""FlatcarMicroCloud's policy pack (CrossGuard, Python): `pulumi preview --policy-pack policy`.

The checks are pure functions in ``rules.py`` (unit-tested); this file only
registers them. What the engine's resource validation cannot see here is
said in README ("Policy pack"): it has no step operation (create, replace,
delete) and gets secrets already unwrapped, so replacement and secret
checks need the preview's own JSON instead.
"""

from pulumi_policy import EnforcementLevel, PolicyPack, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

import rules


def _validate(check):
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        provider = args.provider.name if args.provider is not None else None
        for message in check(args.resource_type, args.name, dict(args.props), provider):
            report(message)

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
