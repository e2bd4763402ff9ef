//! The shipped products and schemas, compiled into the binary so `meshguard check` works from
//! any directory with no configuration at all.

/// `(file name, contents)` of every shipped product declaration.
pub(super) const PRODUCTS: &[(&str, &str)] = &[
    ("cards.yaml", include_str!("../../config/products/cards.yaml")),
    ("loans.yaml", include_str!("../../config/products/loans.yaml")),
    ("payments.yaml", include_str!("../../config/products/payments.yaml")),
];

/// `(file name, contents)` of every shipped schema.
pub(super) const SCHEMAS: &[(&str, &str)] = &[
    ("card-transaction.avsc", include_str!("../../schemas/card-transaction.avsc")),
    ("card-transaction-v0.avsc", include_str!("../../schemas/card-transaction-v0.avsc")),
    ("loan-schema.json", include_str!("../../schemas/loan-schema.json")),
    ("loan-schema-v2.json", include_str!("../../schemas/loan-schema-v2.json")),
    ("loan-application-schema.json", include_str!("../../schemas/loan-application-schema.json")),
    ("payment-analytics-schema.json", include_str!("../../schemas/payment-analytics-schema.json")),
    ("payment-schema.json", include_str!("../../schemas/payment-schema.json")),
    ("payments.graphql", include_str!("../../schemas/payments.graphql")),
];
