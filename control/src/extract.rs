//! Extractors whose rejections use the API's error envelope.

use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};

/// A JSON object body: bad JSON answered as 400, wrong shapes as 422, too large as 413;
/// read with [`from_object`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Reads `value` as `T`, the one way the API reads JSON a client sent (bodies, WebSocket
/// messages). It must be an object: serde would otherwise read a struct from an array of
/// its fields. A number with a zero fraction (`24.0`) is an integer, as JSON Schema counts
/// it, so an integer field takes it. The error is a message for the client.
pub(crate) fn from_object<T: DeserializeOwned>(mut value: Value) -> Result<T, String> {
    if !value.is_object() {
        return Err("the body must be a JSON object".to_owned());
    }
    integral_floats_to_integers(&mut value);
    T::deserialize(value).map_err(|e| format!("invalid body: {e}"))
}

/// [`from_object`] of JSON text; the error says whether the text was JSON at all.
pub(crate) fn parse_object<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let value = serde_json::from_slice(text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("not JSON: {e}")))?;
    from_object(value).map_err(|e| ApiError::new(ErrorCode::InvalidBody, e))
}

/// An optional JSON object body: none at all (or `null`) is `T::default()`; anything
/// else must be JSON that [`parse_object`] takes.
pub(crate) fn parse_optional_object<T: DeserializeOwned + Default>(
    text: &[u8],
) -> Result<T, ApiError> {
    if text.is_empty() {
        return Ok(T::default());
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Null) => Ok(T::default()),
        _ => parse_object(text),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<Value>::from_request(request, state).await?;
        from_object(value)
            .map(ApiJson)
            .map_err(|e| ApiError::new(ErrorCode::InvalidBody, e))
    }
}

/// Rewrites every number with a zero fraction that fits 64 bits as an integer.
fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                // The casts saturate; the range checks keep only exact conversions.
                if (0.0..18_446_744_073_709_551_615.0).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// `Query<T>` with bad parameters answered as 422.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers_and_others_stay() {
        let mut value = serde_json::json!({"a": 24.0, "b": [1.5, -3.0], "c": {"d": 1e300}});
        integral_floats_to_integers(&mut value);
        assert_eq!(value["a"], Value::from(24_u64));
        assert_eq!(value["b"][0], Value::from(1.5));
        assert_eq!(value["b"][1], Value::from(-3_i64));
        assert!(
            value["c"]["d"].is_f64(),
            "too large for 64 bits: stays a float"
        );
    }
}
