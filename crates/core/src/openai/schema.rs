//! JSON Schema as GigaChat's `functions[].parameters` accepts it.
//!
//! Clients generate tool and structured-output schemas from zod or pydantic,
//! and those use what GigaChat refuses or misreads: `$ref` into `$defs`,
//! `anyOf`/`oneOf` for optional and union fields, `allOf` for inheritance,
//! `type` arrays for nullable fields, number enums, `format`s beyond dates.
//! The normaliser rewrites a schema into the plain subset: references
//! inlined, a union reduced to its first non-null variant (or to one string
//! enum when every variant is a string literal), `allOf` merged, one type
//! per node, string-only enums, `format` only `date`, `date-time` or `time`,
//! `properties` on every object and a type on every node.
//!
//! A schema is the client's input: a reference cycle is cut (recursive types
//! such as trees unroll once, then become a plain object), and the work is
//! bounded in depth and in nodes, so a hostile schema can neither loop, blow
//! the stack nor expand exponentially through nested references.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// The `format`s GigaChat accepts; any other would fail the function.
const ALLOWED_FORMATS: [&str; 3] = ["date", "date-time", "time"];

const JSON_SCHEMA_TYPES: [&str; 7] = [
    "array", "boolean", "integer", "null", "number", "object", "string",
];

/// Keywords whose values are schemas the normaliser does not carry over:
/// GigaChat reads none of them, and left in place they could keep a `$ref`
/// that no longer resolves once `$defs` is gone.
const DROPPED_KEYWORDS: [&str; 19] = [
    "$defs",
    "definitions",
    "$id",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "discriminator",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "patternProperties",
    "propertyNames",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Far deeper than any generated schema nests, far shallower than the stack.
const MAX_DEPTH: usize = 64;

/// Sub-schemas visited, after references are expanded: a few hundred for a
/// large real tool; the bound stops a schema whose references fan out
/// exponentially (`A` → two `B`s → four `C`s …).
const MAX_NODES: usize = 10_000;

/// Why a schema could not be normalised within the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaError {
    TooDeep,
    TooLarge,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemaError::TooDeep => {
                "the JSON Schema nests deeper than 64 levels once its $refs are resolved"
            }
            SchemaError::TooLarge => {
                "the JSON Schema grows beyond 10000 sub-schemas once its $refs are resolved"
            }
        })
    }
}

/// The schema rewritten for GigaChat. A schema beyond the bounds becomes an
/// object without declared properties; [`try_normalise`] tells instead.
#[cfg(test)]
pub(crate) fn normalise(schema: &Value) -> Value {
    try_normalise(schema).unwrap_or_else(|_| empty_object())
}

/// The schema rewritten for GigaChat, or why it is beyond the bounds.
pub(crate) fn try_normalise(schema: &Value) -> Result<Value, SchemaError> {
    let mut walker = Walker {
        root: schema,
        open_refs: Vec::new(),
        nodes: 0,
    };
    let mut normalised = walker.node(schema, Place::Root, 0)?;
    // A root `$schema` is kept: zod's and pydantic's output carry it, and
    // GigaChat accepts it (gpt2giga forwards it).
    if let (Value::Object(out), Some(dialect)) = (&mut normalised, schema.get("$schema")) {
        out.entry("$schema").or_insert_with(|| dialect.clone());
    }
    Ok(normalised)
}

fn empty_object() -> Value {
    let mut map = Map::new();
    map.insert("type".into(), "object".into());
    map.insert("properties".into(), Value::Object(Map::new()));
    Value::Object(map)
}

/// Where a sub-schema sits, which decides the type it gets when it names
/// none: the root and properties are objects (GigaChat's own reading of an
/// untyped property), array items strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    Property,
    Items,
    AdditionalProperties,
}

impl Place {
    fn default_type(self) -> &'static str {
        match self {
            Place::Root | Place::Property | Place::AdditionalProperties => "object",
            Place::Items => "string",
        }
    }
}

struct Walker<'a> {
    root: &'a Value,
    /// The `$ref`s being expanded on the path from the root to the current
    /// node: meeting one again is a cycle.
    open_refs: Vec<String>,
    nodes: usize,
}

impl<'a> Walker<'a> {
    fn node(&mut self, schema: &Value, place: Place, depth: usize) -> Result<Value, SchemaError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SchemaError::TooLarge);
        }
        if depth > MAX_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        let empty = Map::new();
        // `true`, `false` and non-schemas carry no structure: typed by place.
        let map = match schema {
            Value::Object(map) => map,
            _ => &empty,
        };

        if let Some(Value::String(reference)) = map.get("$ref") {
            return self.reference(map, reference, place, depth);
        }
        for union in ["anyOf", "oneOf"] {
            if let Some(Value::Array(variants)) = map.get(union) {
                let merged = self.union(map, variants);
                return self.node(&Value::Object(merged), place, depth + 1);
            }
        }
        if let Some(Value::Array(parts)) = map.get("allOf") {
            let merged = self.all_of(map, parts, depth)?;
            return self.node(&Value::Object(merged), place, depth + 1);
        }
        self.plain(map, place, depth)
    }

    /// `$ref` inlined, its siblings (a field's own `description`, `default`)
    /// laid over the target.
    fn reference(
        &mut self,
        map: &Map<String, Value>,
        reference: &str,
        place: Place,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let siblings = map.iter().filter(|(key, _)| key.as_str() != "$ref");
        if self.open_refs.iter().any(|open| open == reference) {
            let mut cut = empty_object();
            if let Value::Object(cut) = &mut cut {
                for (key, value) in siblings {
                    if matches!(key.as_str(), "description" | "title") {
                        cut.insert(key.clone(), value.clone());
                    }
                }
            }
            return Ok(cut);
        }
        let mut merged = match self.resolve(reference) {
            Some(Value::Object(target)) => target.clone(),
            // An external or dangling reference: only the siblings remain.
            _ => Map::new(),
        };
        for (key, value) in siblings {
            merged.insert(key.clone(), value.clone());
        }
        self.open_refs.push(reference.to_owned());
        let result = self.node(&Value::Object(merged), place, depth + 1);
        self.open_refs.pop();
        result
    }

    /// A reference within this document: `#` or a JSON Pointer after `#`
    /// (percent-encoded as a URI fragment may be).
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        let pointer: Cow<'_, str> = percent_decode_str(pointer).decode_utf8().ok()?;
        self.root.pointer(&pointer)
    }

    /// `anyOf`/`oneOf` reduced to one schema: the first non-null variant, or
    /// one string enum when every variant is a string literal (zod's and
    /// pydantic's unions of literals), so no allowed value is lost. The
    /// outer keys (the field's `description`, `default`) win over the
    /// variant's.
    fn union(&self, map: &Map<String, Value>, variants: &[Value]) -> Map<String, Value> {
        let mut merged: Map<String, Value> = map
            .iter()
            .filter(|(key, _)| key.as_str() != "anyOf" && key.as_str() != "oneOf")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let variants: Vec<&Value> = variants
            .iter()
            .filter(|v| !self.is_null_schema(v))
            .collect();
        if variants.len() > 1
            && let Some(literals) = self.string_literals(&variants)
        {
            merged.entry("type").or_insert_with(|| "string".into());
            merged.insert("enum".into(), Value::Array(literals));
            return merged;
        }
        if let Some(Value::Object(first)) = variants.first() {
            for (key, value) in first {
                if !merged.contains_key(key) {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        merged
    }

    /// The string values of variants that are each a string `const` or a
    /// string-only `enum`; `None` when any variant is anything else.
    fn string_literals(&self, variants: &[&Value]) -> Option<Vec<Value>> {
        let mut literals: Vec<Value> = Vec::new();
        for variant in variants {
            let variant = self.follow(variant);
            let values: Vec<&Value> = match (variant.get("const"), variant.get("enum")) {
                (Some(constant), None) => vec![constant],
                (None, Some(Value::Array(values))) => values.iter().collect(),
                _ => return None,
            };
            for value in values {
                if !value.is_string() {
                    return None;
                }
                if !literals.contains(value) {
                    literals.push(value.clone());
                }
            }
        }
        Some(literals)
    }

    /// A variant given as a bare `$ref` read through to its target.
    fn follow<'v>(&self, variant: &'v Value) -> &'v Value
    where
        'a: 'v,
    {
        match variant.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.resolve(reference).unwrap_or(variant),
            None => variant,
        }
    }

    fn is_null_schema(&self, variant: &Value) -> bool {
        match self.follow(variant).get("type") {
            Some(Value::String(kind)) => kind.eq_ignore_ascii_case("null"),
            Some(Value::Array(kinds)) => {
                !kinds.is_empty()
                    && kinds.iter().all(|kind| {
                        kind.as_str()
                            .is_some_and(|k| k.eq_ignore_ascii_case("null"))
                    })
            }
            _ => false,
        }
    }

    /// `allOf` merged into one schema: each part normalised (references
    /// resolved), then properties and `required` united, other keys taken
    /// from the first that has them, the outer schema's first of all.
    fn all_of(
        &mut self,
        map: &Map<String, Value>,
        parts: &[Value],
        depth: usize,
    ) -> Result<Map<String, Value>, SchemaError> {
        let mut merged: Map<String, Value> = map
            .iter()
            .filter(|(key, _)| key.as_str() != "allOf")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for part in parts.iter().filter(|part| part.is_object()) {
            if let Value::Object(part) = self.node(part, Place::Property, depth + 1)? {
                merge_into(&mut merged, part);
            }
        }
        Ok(merged)
    }

    /// A schema without references or compositions left at its top.
    fn plain(
        &mut self,
        map: &Map<String, Value>,
        place: Place,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let mut out = Map::new();
        for (key, value) in map {
            match key.as_str() {
                dropped if DROPPED_KEYWORDS.contains(&dropped) => {}
                "$ref" | "anyOf" | "oneOf" | "allOf" | "$schema" => {}
                "type" => {
                    if let Some(kind) = single_type(value) {
                        out.insert("type".into(), kind);
                    }
                }
                "format" => {
                    if value.as_str().is_some_and(|f| ALLOWED_FORMATS.contains(&f)) {
                        out.insert("format".into(), value.clone());
                    }
                }
                "enum" => {
                    if let Some(values) = string_enum(value) {
                        out.insert("enum".into(), values);
                    }
                }
                "const" => {
                    if value.is_string() && !map.contains_key("enum") {
                        out.insert("enum".into(), Value::Array(vec![value.clone()]));
                    }
                }
                "properties" => {
                    if let Value::Object(properties) = value {
                        let mut normalised = Map::new();
                        for (name, property) in properties {
                            normalised.insert(
                                name.clone(),
                                self.node(property, Place::Property, depth + 1)?,
                            );
                        }
                        out.insert("properties".into(), Value::Object(normalised));
                    }
                }
                "items" => {
                    let item = match value {
                        Value::Array(tuple) => tuple.first(),
                        Value::Object(_) => Some(value),
                        _ => None,
                    };
                    if let Some(item) = item {
                        out.insert("items".into(), self.node(item, Place::Items, depth + 1)?);
                    }
                }
                "prefixItems" => {
                    if !map.contains_key("items")
                        && let Some(first) = value.as_array().and_then(|tuple| tuple.first())
                    {
                        out.insert("items".into(), self.node(first, Place::Items, depth + 1)?);
                    }
                }
                "additionalProperties" => match value {
                    Value::Object(_) => {
                        out.insert(
                            key.clone(),
                            self.node(value, Place::AdditionalProperties, depth + 1)?,
                        );
                    }
                    Value::Bool(_) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => {}
                },
                "required" => {
                    if let Value::Array(names) = value {
                        let names: Vec<Value> = names
                            .iter()
                            .filter(|name| name.is_string())
                            .cloned()
                            .collect();
                        out.insert("required".into(), Value::Array(names));
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }

        if !out.contains_key("type") {
            out.insert("type".into(), infer_type(&out, place).into());
        }
        match out.get("type").and_then(Value::as_str) {
            Some("object") => {
                let declared: Vec<String> = match out
                    .entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    Value::Object(properties) => properties.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                if let Some(Value::Array(required)) = out.get_mut("required") {
                    required.retain(|name| {
                        name.as_str()
                            .is_some_and(|n| declared.iter().any(|d| d == n))
                    });
                }
            }
            Some("array") if !out.get("items").is_some_and(Value::is_object) => {
                out.insert("items".into(), Value::Object(typed("string")));
            }
            _ => {}
        }
        Ok(Value::Object(out))
    }
}

fn typed(kind: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("type".into(), kind.into());
    map
}

/// One type: a known name lower-cased; of a type array, the first non-null.
fn single_type(value: &Value) -> Option<Value> {
    let known = |kind: &str| {
        JSON_SCHEMA_TYPES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(kind.trim()))
            .map(|known| Value::from(*known))
    };
    match value {
        Value::String(kind) => Some(known(kind).unwrap_or_else(|| value.clone())),
        Value::Array(kinds) => {
            let names: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
            let chosen = names
                .iter()
                .find(|kind| !kind.trim().eq_ignore_ascii_case("null"))
                .or(names.first())?;
            Some(known(chosen).unwrap_or_else(|| Value::from(*chosen)))
        }
        _ => None,
    }
}

/// The string values of an enum, each once; `None` when it has none.
fn string_enum(value: &Value) -> Option<Value> {
    let Value::Array(values) = value else {
        return None;
    };
    let mut strings: Vec<Value> = Vec::new();
    for value in values.iter().filter(|value| value.is_string()) {
        if !strings.contains(value) {
            strings.push(value.clone());
        }
    }
    (!strings.is_empty()).then_some(Value::Array(strings))
}

fn infer_type(schema: &Map<String, Value>, place: Place) -> &'static str {
    if schema.contains_key("properties") || schema.contains_key("additionalProperties") {
        "object"
    } else if schema.contains_key("items") {
        "array"
    } else if schema.contains_key("enum") {
        // Only string enums survive normalisation.
        "string"
    } else {
        place.default_type()
    }
}

/// `allOf` merging: properties united (those already there win), `required`
/// united, any other key kept from the first schema that has it.
fn merge_into(target: &mut Map<String, Value>, source: Map<String, Value>) {
    for (key, value) in source {
        let Some(existing) = target.get_mut(&key) else {
            target.insert(key, value);
            continue;
        };
        match (key.as_str(), existing, value) {
            ("properties", Value::Object(existing), Value::Object(added)) => {
                for (name, property) in added {
                    existing.entry(name).or_insert(property);
                }
            }
            ("required", Value::Array(existing), Value::Array(added)) => {
                for name in added {
                    if !existing.contains(&name) {
                        existing.push(name);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// Every node of a normalised schema is in GigaChat's subset: one type,
    /// no references or compositions, string-only enums, date formats only,
    /// `properties` on every object and `items` on every array.
    fn assert_gigachat_subset(schema: &Value, path: &str) {
        let Value::Object(node) = schema else {
            panic!("{path}: not a schema object: {schema}");
        };
        for key in [
            "$ref",
            "$defs",
            "definitions",
            "anyOf",
            "oneOf",
            "allOf",
            "const",
            "discriminator",
            "propertyNames",
        ] {
            assert!(!node.contains_key(key), "{path}: `{key}` left in {schema}");
        }
        let kind = node.get("type").and_then(Value::as_str);
        assert!(
            kind.is_some_and(|k| JSON_SCHEMA_TYPES.contains(&k)),
            "{path}: no single known type in {schema}"
        );
        if let Some(format) = node.get("format") {
            assert!(
                ALLOWED_FORMATS.contains(&format.as_str().unwrap()),
                "{path}: format {format}"
            );
        }
        if let Some(values) = node.get("enum") {
            assert!(
                values.as_array().unwrap().iter().all(Value::is_string),
                "{path}: enum {values}"
            );
        }
        if kind == Some("object") {
            let properties = node.get("properties").and_then(Value::as_object);
            let properties =
                properties.unwrap_or_else(|| panic!("{path}: object without properties"));
            for (name, property) in properties {
                assert_gigachat_subset(property, &format!("{path}.{name}"));
            }
            if let Some(required) = node.get("required") {
                for name in required.as_array().unwrap() {
                    assert!(
                        properties.contains_key(name.as_str().unwrap()),
                        "{path}: required {name} undeclared"
                    );
                }
            }
        }
        if kind == Some("array") {
            assert_gigachat_subset(&node["items"], &format!("{path}[]"));
        }
        if let Some(extra @ Value::Object(_)) = node.get("additionalProperties") {
            assert_gigachat_subset(extra, &format!("{path}{{}}"));
        }
    }

    const FIXTURES: [(&str, &str); 7] = [
        (
            "zod4-booking",
            include_str!("../../../../tests/fixtures/schemas/zod4-booking.json"),
        ),
        (
            "zod4-recursive-tree",
            include_str!("../../../../tests/fixtures/schemas/zod4-recursive-tree.json"),
        ),
        (
            "zod3-route",
            include_str!("../../../../tests/fixtures/schemas/zod3-route.json"),
        ),
        (
            "zod3-route-named",
            include_str!("../../../../tests/fixtures/schemas/zod3-route-named.json"),
        ),
        (
            "zod3-linked-list",
            include_str!("../../../../tests/fixtures/schemas/zod3-linked-list.json"),
        ),
        (
            "pydantic-order",
            include_str!("../../../../tests/fixtures/schemas/pydantic-order.json"),
        ),
        (
            "pydantic-recursive-forest",
            include_str!("../../../../tests/fixtures/schemas/pydantic-recursive-forest.json"),
        ),
    ];

    #[test]
    fn every_generated_schema_normalises_into_gigachats_subset_with_an_object_root() {
        for (name, text) in FIXTURES {
            let normalised =
                try_normalise(&fixture(text)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(normalised["type"], "object", "{name}");
            assert_gigachat_subset(&normalised, name);
            // Idempotent: a normalised schema is left as it is.
            assert_eq!(normalise(&normalised), normalised, "{name}");
        }
    }

    #[test]
    fn pydantic_order_keeps_its_fields_through_refs_optionals_and_unions() {
        let order = normalise(&fixture(FIXTURES[5].1));
        let properties = &order["properties"];
        // $ref into $defs, with the field's own default laid over it.
        assert_eq!(
            properties["shipping"]["properties"]["city"],
            json!({ "type": "string", "title": "City", "description": "City name" })
        );
        assert_eq!(
            properties["colour"],
            json!({ "type": "string", "enum": ["red", "green"], "title": "Colour" })
        );
        // Optional[Address] = anyOf [$ref, null].
        assert_eq!(properties["billing"]["type"], "object");
        assert_eq!(properties["billing"]["default"], Value::Null);
        assert_eq!(
            properties["billing"]["properties"]["street"]["type"],
            "string"
        );
        // Optional[date] keeps its date format; int enum loses its values.
        assert_eq!(
            properties["deliver_on"],
            json!({ "type": "string", "format": "date", "title": "Deliver On", "default": null })
        );
        assert_eq!(
            properties["priority"],
            json!({ "type": "integer", "title": "Priority", "default": 1 })
        );
        // Discriminated union: the first variant, its literal as an enum.
        assert_eq!(
            properties["payment"]["properties"]["kind"],
            json!({ "type": "string", "enum": ["card"], "title": "Kind" })
        );
        assert!(properties["payment"].get("discriminator").is_none());
        assert_eq!(properties["score"]["type"], "integer");
        assert_eq!(
            properties["meta"]["additionalProperties"],
            json!({ "type": "string" })
        );
        assert_eq!(
            order["required"],
            json!([
                "customer", "placed", "colour", "shipping", "quantity", "payment"
            ])
        );
        assert_eq!(order["description"], "An order to place.");
    }

    #[test]
    fn zod_schemas_keep_their_fields_through_pointers_and_unions() {
        let booking = normalise(&fixture(FIXTURES[0].1));
        let properties = &booking["properties"];
        assert_eq!(
            booking["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(
            properties["guest"]["properties"]["phone"],
            json!({ "type": "string" })
        );
        assert!(
            properties["guest"]["properties"]["email"]
                .get("format")
                .is_none()
        );
        assert_eq!(properties["checkOut"]["format"], "date-time");
        assert_eq!(properties["stars"], json!({ "type": "number" }));
        assert_eq!(
            properties["payment"]["properties"]["kind"],
            json!({ "type": "string", "enum": ["card"] })
        );
        assert_eq!(
            properties["extras"],
            json!({ "type": "object", "properties": {}, "additionalProperties": { "type": "number" } })
        );

        let route = normalise(&fixture(FIXTURES[2].1));
        let point = json!({ "type": "object", "properties": { "lat": { "type": "number" }, "lon": { "type": "number" } },
            "required": ["lat", "lon"], "additionalProperties": false });
        assert_eq!(route["properties"]["to"], point);
        assert_eq!(route["properties"]["via"]["items"], point);
        // A union of string literals keeps every value.
        assert_eq!(
            route["properties"]["avoid"],
            json!({ "type": "string", "enum": ["tolls", "ferries"] })
        );
        assert_eq!(route["properties"]["priority"], json!({ "type": "number" }));

        // A root `$ref` into `definitions` resolves to the same schema.
        let named = normalise(&fixture(FIXTURES[3].1));
        assert_eq!(named["properties"], route["properties"]);
    }

    #[test]
    fn recursive_schemas_unroll_once_then_stop() {
        let tree = normalise(&fixture(FIXTURES[1].1));
        let node = &tree["properties"]["root"];
        assert_eq!(node["properties"]["name"], json!({ "type": "string" }));
        let child = &node["properties"]["children"]["items"];
        assert_eq!(child, &json!({ "type": "object", "properties": {} }));

        let list = normalise(&fixture(FIXTURES[4].1));
        let next = &list["properties"]["head"]["properties"]["next"];
        assert_eq!(next["properties"]["value"], json!({ "type": "string" }));
        assert_eq!(
            next["properties"]["next"],
            json!({ "type": "object", "properties": {} })
        );

        let forest = normalise(&fixture(FIXTURES[6].1));
        let tree = &forest["properties"]["trees"]["items"];
        assert_eq!(
            tree["properties"]["children"]["items"],
            json!({ "type": "object", "properties": {} })
        );
    }

    #[test]
    fn all_of_parts_are_merged() {
        let schema = json!({
            "allOf": [
                { "$ref": "#/$defs/Named" },
                { "type": "object", "properties": { "age": { "type": "integer" }, "name": { "type": "number" } }, "required": ["age", "name"] },
            ],
            "properties": { "id": { "type": "string" } },
            "required": ["id"],
            "$defs": { "Named": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] } }
        });
        assert_eq!(
            normalise(&schema),
            json!({
                "type": "object",
                "properties": { "id": { "type": "string" }, "name": { "type": "string" }, "age": { "type": "integer" } },
                "required": ["id", "name", "age"],
            })
        );
    }

    #[test]
    fn types_enums_formats_and_missing_types_are_normalised() {
        let schema = json!({
            "properties": {
                "nullable": { "type": ["null", "String"] },
                "only_null": { "type": ["null"] },
                "mixed_enum": { "enum": [1, "a", true, "a", "b"] },
                "int_enum": { "type": "integer", "enum": [1, 2] },
                "literal": { "const": "fixed" },
                "email": { "type": "string", "format": "email" },
                "time": { "type": "string", "format": "time" },
                "untyped": { "description": "anything" },
                "list": { "type": "array" },
                "any_list": { "type": "array", "items": {} },
                "tuple": { "type": "array", "prefixItems": [{ "type": "integer" }, { "type": "string" }] },
                "untyped_list": { "items": { "properties": { "x": {} } } },
                "nested": { "type": "object" },
            }
        });
        assert_eq!(
            normalise(&schema),
            json!({
                "type": "object",
                "properties": {
                    "nullable": { "type": "string" },
                    "only_null": { "type": "null" },
                    "mixed_enum": { "type": "string", "enum": ["a", "b"] },
                    "int_enum": { "type": "integer" },
                    "literal": { "type": "string", "enum": ["fixed"] },
                    "email": { "type": "string" },
                    "time": { "type": "string", "format": "time" },
                    "untyped": { "type": "object", "properties": {}, "description": "anything" },
                    "list": { "type": "array", "items": { "type": "string" } },
                    "any_list": { "type": "array", "items": { "type": "string" } },
                    "tuple": { "type": "array", "items": { "type": "integer" } },
                    "untyped_list": { "type": "array", "items": { "type": "object", "properties": { "x": { "type": "object", "properties": {} } } } },
                    "nested": { "type": "object", "properties": {} },
                }
            })
        );
        // A root with no type at all is an object.
        assert_eq!(
            normalise(&json!({})),
            json!({ "type": "object", "properties": {} })
        );
    }

    #[test]
    fn one_of_takes_the_first_non_null_variant_and_the_field_keeps_its_own_keys() {
        let schema = json!({ "type": "object", "properties": {
            "when": { "description": "When", "oneOf": [{ "type": "null" }, { "type": "string", "format": "date", "description": "inner" }, { "type": "integer" }] },
        }});
        assert_eq!(
            normalise(&schema)["properties"]["when"],
            json!({ "type": "string", "format": "date", "description": "When" })
        );
    }

    #[test]
    fn a_refs_own_keys_win_over_its_targets() {
        let schema = json!({ "type": "object", "properties": {
            "home": { "$ref": "#/$defs/Place", "description": "Where the user lives" },
        }, "$defs": { "Place": { "type": "object", "description": "A place", "properties": { "city": { "type": "string" } } } } });
        assert_eq!(
            normalise(&schema)["properties"]["home"],
            json!({ "type": "object", "description": "Where the user lives", "properties": { "city": { "type": "string" } } })
        );
    }

    #[test]
    fn hostile_schemas_end_within_bounds() {
        // A schema that is its own reference, and a two-step cycle.
        let selfish = json!({ "$ref": "#" });
        assert_eq!(
            normalise(&selfish),
            json!({ "type": "object", "properties": {} })
        );
        let cycle = json!({ "$ref": "#/$defs/A", "$defs": {
            "A": { "$ref": "#/$defs/B" }, "B": { "$ref": "#/$defs/A" } } });
        assert_eq!(try_normalise(&cycle).unwrap()["type"], "object");

        // References that fan out: 2^30 nodes if expanded naively.
        let mut defs = Map::new();
        for level in 0..30 {
            defs.insert(
                format!("L{level}"),
                json!({ "type": "object", "properties": {
                    "a": { "$ref": format!("#/$defs/L{}", level + 1) },
                    "b": { "$ref": format!("#/$defs/L{}", level + 1) },
                }}),
            );
        }
        defs.insert("L30".into(), json!({ "type": "string" }));
        let bomb = json!({ "$ref": "#/$defs/L0", "$defs": defs });
        assert_eq!(try_normalise(&bomb), Err(SchemaError::TooLarge));
        assert_eq!(
            normalise(&bomb),
            json!({ "type": "object", "properties": {} })
        );

        // Nesting deeper than the bound (a reference chain of 100 distinct
        // definitions, each one level deeper).
        let mut defs = Map::new();
        for level in 0..100 {
            defs.insert(format!("D{level}"), json!({ "type": "object", "properties": { "x": { "$ref": format!("#/$defs/D{}", level + 1) } } }));
        }
        let deep = json!({ "$ref": "#/$defs/D0", "$defs": defs });
        assert_eq!(try_normalise(&deep), Err(SchemaError::TooDeep));

        // Dangling, external and malformed references leave their siblings.
        let odd = json!({ "properties": {
            "dangling": { "$ref": "#/$defs/Nope", "description": "d" },
            "external": { "$ref": "https://example.com/schema.json" },
            "percent": { "$ref": "#/%24defs/My%20Type" },
            "not_a_string": { "$ref": 5, "type": "string" },
            "bad_union": { "anyOf": "x", "type": "integer" },
            "empty_union": { "anyOf": [] },
        }, "$defs": { "My Type": { "type": "boolean" } } });
        assert_eq!(
            normalise(&odd)["properties"],
            json!({
                "dangling": { "type": "object", "properties": {}, "description": "d" },
                "external": { "type": "object", "properties": {} },
                "percent": { "type": "boolean" },
                "not_a_string": { "type": "string" },
                "bad_union": { "type": "integer" },
                "empty_union": { "type": "object", "properties": {} },
            })
        );
        // Non-object schemas anywhere.
        for value in [
            json!(true),
            json!(null),
            json!([1, 2]),
            json!("string"),
            json!({ "properties": [1], "items": 7, "type": 3 }),
        ] {
            let _ = normalise(&value);
            let _ = normalise(
                &json!({ "properties": { "x": value.clone() }, "items": value.clone(), "additionalProperties": value.clone() }),
            );
        }
    }
}
