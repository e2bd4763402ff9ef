//! `POST /{product}/graphql`: GraphQL that answers, with a schema generated from the product's
//! first contract (no hand-written schema text): `record(id)`, `search(filter, sort, limit,
//! cursor)` with the same typed filter language and limits as REST (the arguments are handed
//! to [`super::search::parse`]), and `lineage(id)`. Authentication, authorization (a read) and
//! audit are the REST ones ([`super::audit::gate`], [`Api::guard`]); depth and complexity are
//! limited; introspection is on.

use std::sync::Arc;

use async_graphql::ErrorExtensions;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Scalar, Schema, SchemaError, TypeRef};
use serde_json::{Value, json};

use super::Api;
use super::search::{FieldType, Fields};
use crate::product::Product;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 8;
/// Most complex query accepted (one point per field).
pub const MAX_COMPLEXITY: usize = 200;

/// What a resolver needs: the API and the product the route named.
#[derive(Debug, Clone)]
pub struct Target {
    /// The API, for the MongoDB reads.
    pub api: Arc<Api>,
    /// The product's name.
    pub product: String,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `payments-data-product` → `PaymentsDataProduct`.
fn type_name(product: &str) -> String {
    product
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
        })
        .collect()
}

fn json_field(name: &str, ty: TypeRef) -> Field {
    let key = name.to_owned();
    Field::new(name, ty, move |ctx| {
        let key = key.clone();
        FieldFuture::new(async move {
            let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
            match parent.get(&key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => Ok(Some(FieldValue::value(async_graphql::Value::from_json(v.clone())?))),
            }
        })
    })
}

async fn target<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<(&'a Target, &'a Product)> {
    let t = ctx.data::<Target>()?;
    let p = t.api.catalog.product(&t.product).ok_or_else(|| async_graphql::Error::new("no such data product"))?;
    Ok((t, p))
}

fn problem(p: super::problem::Problem) -> async_graphql::Error {
    async_graphql::Error::new(p.detail.clone()).extend_with(|_, e| {
        e.set("status", p.status.as_u16());
        if !p.errors.is_empty() {
            e.set("errors", async_graphql::Value::from_json(json!(p.errors)).unwrap_or_default());
        }
    })
}

/// The schema of one product, from its contract's top-level fields.
pub fn schema(p: &Product, fields: &Fields) -> Result<Schema, SchemaError> {
    let record = type_name(p.name());
    let mut rec = Object::new(&record).description(format!("A record of {} (its latest version).", p.name()));
    for (name, t) in fields.iter().filter(|(n, _)| is_name(n)) {
        let ty = match t {
            FieldType::Integer => TypeRef::named(TypeRef::INT),
            FieldType::Number => TypeRef::named(TypeRef::FLOAT),
            FieldType::String | FieldType::Enum(_) => TypeRef::named(TypeRef::STRING),
            FieldType::Boolean => TypeRef::named(TypeRef::BOOLEAN),
            FieldType::Other => TypeRef::named("JSON"),
        };
        rec = rec.field(json_field(name, ty));
    }
    rec = rec.field(json_field("_meta", TypeRef::named("JSON")));
    let page = Object::new("SearchPage")
        .field(json_field("count", TypeRef::named_nn(TypeRef::INT)))
        .field(json_field("next_cursor", TypeRef::named(TypeRef::STRING)))
        .field(Field::new("results", TypeRef::named_nn_list_nn(&record), |ctx| {
            FieldFuture::new(async move {
                let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
                let list = parent.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
                Ok(Some(FieldValue::list(list.into_iter().map(FieldValue::owned_any))))
            })
        }));
    let query = Object::new("Query")
        .field(
            Field::new("record", TypeRef::named(&record), |ctx| {
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("id")?.string()?.to_owned();
                    let (t, p) = target(&ctx).await?;
                    match t.api.record(p, &id).await {
                        Ok(v) => Ok(Some(FieldValue::owned_any(v))),
                        Err(e) if e.status.as_u16() == 404 => Ok(None),
                        Err(e) => Err(problem(e)),
                    }
                })
            })
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        )
        .field(
            Field::new("search", TypeRef::named_nn("SearchPage"), |ctx| {
                FieldFuture::new(async move {
                    let mut body = serde_json::Map::new();
                    for key in ["filter", "sort", "limit", "cursor"] {
                        if let Some(v) = ctx.args.get(key) {
                            let _ = body.insert(key.to_owned(), v.as_value().clone().into_json()?);
                        }
                    }
                    let (t, p) = target(&ctx).await?;
                    let bytes = axum::body::Bytes::from(Value::Object(body).to_string());
                    let v = t.api.search(p, Ok(bytes)).await.map_err(problem)?;
                    Ok(Some(FieldValue::owned_any(v)))
                })
            })
            .description("The REST search: the same typed filter (JSON), sort, limit (1-500) and cursor.")
            .argument(InputValue::new("filter", TypeRef::named("JSON")))
            .argument(InputValue::new("sort", TypeRef::named("JSON")))
            .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)))
            .argument(InputValue::new("cursor", TypeRef::named(TypeRef::STRING))),
        )
        .field(
            Field::new("lineage", TypeRef::named("JSON"), |ctx| {
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("id")?.string()?.to_owned();
                    let (t, p) = target(&ctx).await?;
                    match t.api.lineage(p, &id).await {
                        Ok(v) => Ok(Some(FieldValue::value(async_graphql::Value::from_json(v)?))),
                        Err(e) if e.status.as_u16() == 404 => Ok(None),
                        Err(e) => Err(problem(e)),
                    }
                })
            })
            .description("Upstream and downstream of a record, as GET /{product}/lineage/{id}.")
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        );
    Schema::build("Query", None, None)
        .register(Scalar::new("JSON").description("Any JSON value."))
        .register(rec)
        .register(page)
        .register(query)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("payments-data-product"), "PaymentsDataProduct");
        assert!(is_name("payment_id") && !is_name("1x") && !is_name("a-b"));
    }
}
