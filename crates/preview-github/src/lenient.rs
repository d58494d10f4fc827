//! Deserialization that never fails on a value's type, so that validation can name the field at
//! fault instead of serde's "invalid type at line 1 column 4031". Fields we do not read are skipped
//! without building anything.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Any JSON value, with the scalars kept and objects or arrays skipped.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    UInt(u64),
    Int(i64),
    Float,
    Bool(bool),
    Null,
    Object,
    Array,
}

impl Scalar<'_> {
    /// What the value is, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::UInt(_) | Scalar::Int(_) | Scalar::Float => "a number",
            Scalar::Bool(_) => "a boolean",
            Scalar::Null => "null",
            Scalar::Object => "an object",
            Scalar::Array => "an array",
        }
    }
}

struct ScalarVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// An object deserialized as `T`, or a note of what stood there instead.
#[derive(Debug)]
pub(crate) enum Obj<T> {
    Obj(T),
    Not(&'static str),
}

impl<T> Obj<T> {
    /// The object, or an error naming `field`.
    pub(crate) fn get(opt: Option<Obj<T>>, field: &str) -> std::result::Result<T, crate::Error> {
        match opt {
            Some(Obj::Obj(t)) => Ok(t),
            Some(Obj::Not(kind)) => Err(crate::Error::invalid_field(
                field,
                format!("expected an object, found {kind}"),
            )),
            None => Err(crate::Error::invalid_field(field, "missing")),
        }
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj::Obj)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj::Not("an array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj::Not("a string"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Obj::Not("a number"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Obj::Not("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Obj::Not("a number"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Obj::Not("a boolean"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Obj::Not("null"))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Obj::Not("null"))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

/// A required string field.
pub(crate) fn string<'a>(v: &'a Option<Scalar<'_>>, field: &str) -> crate::Result<&'a str> {
    match v {
        Some(Scalar::Str(s)) => Ok(s),
        None => Err(crate::Error::invalid_field(field, "missing")),
        Some(other) => Err(crate::Error::invalid_field(
            field,
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

/// An optional string field (absent or null is `None`).
pub(crate) fn opt_string<'a>(
    v: &'a Option<Scalar<'_>>,
    field: &str,
) -> crate::Result<Option<&'a str>> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(_) => string(v, field).map(Some),
    }
}

/// An optional boolean field (absent or null is `false`).
pub(crate) fn flag(v: &Option<Scalar<'_>>, field: &str) -> crate::Result<bool> {
    match v {
        None | Some(Scalar::Null) => Ok(false),
        Some(Scalar::Bool(b)) => Ok(*b),
        Some(other) => Err(crate::Error::invalid_field(
            field,
            format!("expected a boolean, found {}", other.kind()),
        )),
    }
}

/// A required non-negative integer field.
pub(crate) fn uint(v: &Option<Scalar<'_>>, field: &str) -> crate::Result<u64> {
    match v {
        Some(Scalar::UInt(n)) => Ok(*n),
        None => Err(crate::Error::invalid_field(field, "missing")),
        Some(Scalar::Int(n)) => Err(crate::Error::invalid_field(
            field,
            format!("{n} is negative"),
        )),
        Some(other) => Err(crate::Error::invalid_field(
            field,
            format!("expected an integer, found {}", other.kind()),
        )),
    }
}

/// A key of a JSON object, as bytes: serde_json then skips the UTF-8 check of each key, and the
/// repository objects of a `pull_request` event have about a hundred keys each.
struct Key<'a>(Cow<'a, [u8]>);

struct KeyVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
    type Value = Key<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_vec())))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v.as_bytes())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(KeyVisitor(PhantomData))
    }
}

/// Reads the entries of a JSON object: `found(key, map)` reads the value of a key it wants and
/// returns `true`; the values of other keys are skipped unread.
pub(crate) fn visit_fields<'de, A: MapAccess<'de>>(
    mut map: A,
    mut found: impl FnMut(&[u8], &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(Key(key)) = map.next_key()? {
        if !found(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// Declares structs of optional fields read from a JSON object by key, with keys compared as
/// bytes and the values of other keys skipped unread. Like `#[derive(Deserialize)]` of `Option`
/// fields: an absent key or `null` is `None`, and a repeated key is an error.
macro_rules! json_fields {
    ($($(#[$doc:meta])* struct $name:ident<'a> { $($field:ident: $ty:ty = $key:literal,)* })*) => {$(
        $(#[$doc])*
        struct $name<'a> {
            $($field: Option<$ty>,)*
        }

        impl<'de: 'a, 'a> serde::Deserialize<'de> for $name<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V<'a>(std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
                    type Value = $name<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> std::result::Result<Self::Value, A::Error> {
                        let mut out = $name { $($field: None,)* };
                        let mut seen = 0u64;
                        crate::lenient::visit_fields(map, |key, map| {
                            let mut bit = 1u64;
                            $(if key == $key.as_bytes() {
                                if seen & bit != 0 {
                                    return Err(serde::de::Error::duplicate_field($key));
                                }
                                seen |= bit;
                                out.$field = map.next_value()?;
                                return Ok(true);
                            }
                            bit <<= 1;)*
                            let _ = bit;
                            Ok(false)
                        })?;
                        Ok(out)
                    }
                }
                d.deserialize_map(V(std::marker::PhantomData))
            }
        }
    )*};
}
pub(crate) use json_fields;
