//! Strategic merge patch exactly as kustomize applies it: a port of kyaml's `walk` + `merge2`
//! (prepend mode). Maps merge recursively, `null` deletes, `$patch: delete|replace|merge`
//! directives, lists of built-in kinds with a merge strategy merge element-wise by their merge
//! keys (new patch elements first, as kustomize does), every other list is replaced.
//!
//! The port keeps kyaml's node sharing (an element of the result is the destination element
//! merged in place) because kustomize's results, quirks included, depend on it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use serde_json::{Map, Value};
use serde_saphyr::granit_parser::ScalarStyle;

use super::schema::{self, Schema};
use super::util::scalar_text;

#[derive(Debug)]
enum Node {
    /// A `null` (tagged null in kyaml).
    Null,
    /// A scalar, and whether it is written quoted (or as a block scalar); `Value::Null` here
    /// is a null kept on purpose (kyaml's untagged "null").
    Scalar(Value, bool),
    Map(Vec<(String, N)>),
    Seq(Vec<N>),
}

type N = Rc<RefCell<Node>>;
type Src = Option<N>;
type R<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Scalar,
    Map,
    Seq,
}

fn new(n: Node) -> N {
    Rc::new(RefCell::new(n))
}

/// A node tree; `quoted` says which scalars (by JSON pointer) are written quoted.
fn to_node(v: &Value, ptr: &str, quoted: &HashSet<String>) -> N {
    new(match v {
        Value::Null => Node::Null,
        Value::Object(m) => Node::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), to_node(v, &super::util::ptr(ptr, k), quoted)))
                .collect(),
        ),
        Value::Array(a) => Node::Seq(
            a.iter()
                .enumerate()
                .map(|(i, v)| to_node(v, &format!("{ptr}/{i}"), quoted))
                .collect(),
        ),
        Value::String(s) => Node::Scalar(
            v.clone(),
            quoted.contains(ptr) || super::styles::needs_quotes(s),
        ),
        other => Node::Scalar(other.clone(), quoted.contains(ptr)),
    })
}

fn to_value(n: &N) -> Value {
    match &*n.borrow() {
        Node::Null => Value::Null,
        Node::Scalar(v, _) => v.clone(),
        Node::Map(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), to_value(v));
            }
            Value::Object(m)
        }
        Node::Seq(items) => Value::Array(items.iter().map(to_value).collect()),
    }
}

fn kind(n: &N) -> Kind {
    match &*n.borrow() {
        Node::Null | Node::Scalar(..) => Kind::Scalar,
        Node::Map(_) => Kind::Map,
        Node::Seq(_) => Kind::Seq,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Scalar => "ScalarNode",
        Kind::Map => "MappingNode",
        Kind::Seq => "SequenceNode",
    }
}

fn is_tagged_null(s: &Src) -> bool {
    s.as_ref()
        .is_some_and(|n| matches!(*n.borrow(), Node::Null))
}

fn is_missing_or_null(s: &Src) -> bool {
    s.is_none() || is_tagged_null(s)
}

fn is_empty_map(s: &Src) -> bool {
    s.as_ref()
        .is_some_and(|n| matches!(&*n.borrow(), Node::Map(f) if f.is_empty()))
}

fn is_nil_or_empty(n: &N) -> bool {
    match &*n.borrow() {
        Node::Null | Node::Scalar(Value::Null, _) => true,
        Node::Map(f) => f.is_empty(),
        Node::Seq(s) => s.is_empty(),
        Node::Scalar(..) => false,
    }
}

fn is_map(n: &N) -> bool {
    matches!(&*n.borrow(), Node::Map(_))
}

/// The scalar text kyaml compares (`Node.Value`); empty for maps and lists.
fn text(n: &N) -> String {
    match &*n.borrow() {
        Node::Null | Node::Scalar(Value::Null, _) => "null".into(),
        Node::Scalar(v, _) => scalar_text(v).unwrap_or_default(),
        _ => String::new(),
    }
}

fn field(s: &Src, key: &str) -> Src {
    let n = s.as_ref()?;
    match &*n.borrow() {
        Node::Map(fields) => fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

fn seq_items(n: &N) -> Vec<N> {
    match &*n.borrow() {
        Node::Seq(items) => items.clone(),
        _ => Vec::new(),
    }
}

/// A plain scalar from text, resolved as YAML would (`80` is a number).
fn plain(text: &str) -> N {
    let v = crate::yaml::resolve_scalar(text, ScalarStyle::Plain, None)
        .unwrap_or_else(|_| Value::String(text.to_string()));
    new(Node::Scalar(v, false))
}

/// kyaml `FieldSetter`: a missing or null value clears the field. A new scalar takes the
/// style of the one it replaces: over a quoted string, a number or boolean becomes a string.
fn set_field(dest: &N, key: &str, val: Src) {
    let mut d = dest.borrow_mut();
    let Node::Map(fields) = &mut *d else { return };
    match val {
        Some(v) if !matches!(*v.borrow(), Node::Null) => {
            if let Some(slot) = fields.iter_mut().find(|(k, _)| k == key) {
                let was_quoted =
                    !Rc::ptr_eq(&slot.1, &v) && matches!(&*slot.1.borrow(), Node::Scalar(_, true));
                let retyped = match &*v.borrow() {
                    Node::Scalar(x @ (Value::Number(_) | Value::Bool(_)), _) if was_quoted => {
                        Some(scalar_text(x).unwrap_or_default())
                    }
                    _ => None,
                };
                slot.1 = match retyped {
                    Some(t) => new(Node::Scalar(Value::String(t), true)),
                    None => v,
                };
            } else {
                fields.push((key.to_string(), v));
            }
        }
        _ => fields.retain(|(k, _)| k != key),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directive {
    Unknown,
    Replace,
    Delete,
    Merge,
}

/// Reads (and removes) a `$patch` directive from a patch node.
fn directive(origin: &Src) -> R<Directive> {
    let Some(n) = origin else {
        return Ok(Directive::Merge);
    };
    let mut b = n.borrow_mut();
    match &mut *b {
        Node::Seq(_) => Ok(Directive::Merge),
        Node::Map(fields) => {
            let Some(pos) = fields.iter().position(|(k, _)| k == "$patch") else {
                return Ok(Directive::Merge);
            };
            let v = text(&fields[pos].1);
            let d = match v.as_str() {
                "delete" => Directive::Delete,
                "replace" => Directive::Replace,
                "merge" => Directive::Merge,
                _ => return Err(format!("unknown patch strategy '{v}'")),
            };
            fields.remove(pos);
            Ok(d)
        }
        _ => Err("no implemented strategic merge patch strategy for a scalar".into()),
    }
}

/// Merges `patch` into `dest` (both whole objects); `quoted` has the pointers of the scalars
/// of `dest` written quoted. `None` when the patch deletes the object.
pub fn merge(
    dest: &Value,
    patch: &Value,
    quoted: &HashSet<String>,
) -> Result<Option<Value>, String> {
    let none = HashSet::new();
    let r = walk(
        [
            Some(to_node(dest, "", quoted)),
            Some(to_node(patch, "", &none)),
        ],
        None,
        "",
    )?;
    Ok(r.map(|n| to_value(&n)).filter(|v| v.is_object()))
}

fn get_schema(s: &[Src; 2], given: Option<Schema>) -> Option<Schema> {
    if given.is_some() {
        return given;
    }
    for src in s.iter() {
        if is_missing_or_null(src) {
            continue;
        }
        let api = field(src, "apiVersion")
            .map(|n| text(&n))
            .unwrap_or_default();
        let k = field(src, "kind").map(|n| text(&n)).unwrap_or_default();
        if api.is_empty() || k.is_empty() {
            continue;
        }
        if let Some(sc) = schema::for_type(&api, &k) {
            return Some(sc);
        }
    }
    None
}

fn walk(s: [Src; 2], schema: Option<Schema>, path: &str) -> R<Src> {
    let schema = get_schema(&s, schema);
    let k = s
        .iter()
        .find(|x| !is_missing_or_null(x))
        .map(|x| kind(x.as_ref().expect("present")));
    if let Some(k) = k {
        for src in s.iter().flatten() {
            if matches!(*src.borrow(), Node::Null) {
                continue;
            }
            let sk = kind(src);
            if sk != k {
                return Err(format!(
                    "wrong node kind for {}: expected {} but the patch has a {}",
                    if path.is_empty() { "." } else { path },
                    kind_name(k),
                    kind_name(sk)
                ));
            }
        }
    }
    match k {
        Some(Kind::Map) | None => walk_map(s, schema, path),
        Some(Kind::Seq) => match schema {
            Some(sc) if sc.is_associative() => walk_assoc(s, sc, path),
            _ => Ok(if s[1].is_some() {
                s[1].clone()
            } else {
                s[0].clone()
            }),
        },
        Some(Kind::Scalar) => Ok(if s[1].is_some() {
            s[1].clone()
        } else {
            s[0].clone()
        }),
    }
}

fn visit_map(s: &[Src; 2]) -> R<Src> {
    let (dest, origin) = (&s[0], &s[1]);
    if is_missing_or_null(dest) {
        let ps = directive(origin).unwrap_or(Directive::Unknown);
        if ps == Directive::Delete {
            return Ok(None);
        }
        if origin.is_none() && dest.is_some() {
            // A null the patch does not mention stays.
            return Ok(Some(new(Node::Scalar(Value::Null, false))));
        }
        return Ok(origin.clone());
    }
    if is_tagged_null(origin) {
        return Ok(None);
    }
    Ok(match directive(origin)? {
        Directive::Delete => None,
        Directive::Replace => origin.clone(),
        _ => dest.clone(),
    })
}

fn walk_map(mut s: [Src; 2], schema: Option<Schema>, path: &str) -> R<Src> {
    let dest = visit_map(&s)?;
    s[0] = dest.clone();
    let Some(dest) = dest else { return Ok(None) };
    let mut names: Vec<String> = Vec::new();
    for src in s.iter().flatten() {
        if let Node::Map(fields) = &*src.borrow() {
            for (k, _) in fields {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    names.sort();
    for key in names {
        let child = schema.and_then(|sc| sc.field(&key));
        let fv = [field(&s[0], &key), field(&s[1], &key)];
        let val = walk(fv, child, &format!("{path}.{key}"))?;
        set_field(&dest, &key, val);
    }
    Ok(Some(dest))
}

fn visit_assoc_list(s: &[Src; 2]) -> R<Src> {
    let (dest, origin) = (&s[0], &s[1]);
    if is_missing_or_null(dest) {
        return Ok(origin.clone());
    }
    if is_tagged_null(origin) {
        return Ok(None);
    }
    Ok(match directive(origin)? {
        Directive::Delete => None,
        Directive::Replace => origin.clone(),
        _ => dest.clone(),
    })
}

fn walk_assoc(mut s: [Src; 2], schema: Schema, path: &str) -> R<Src> {
    let dest = visit_assoc_list(&s)?;
    s[0] = dest.clone();
    let Some(dest) = dest else { return Ok(None) };
    let (_, keys) = schema.strategy_and_keys();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let values = element_values(&s, &keys);
    if !values.is_empty() || !keys.is_empty() {
        set_assoc_elements(&s, schema, values, keys, dest, path)
    } else {
        let prims = element_primitive_values(&s);
        set_assoc_elements(&s, schema, prims, vec![String::new()], dest, path)
    }
}

/// Merge-key values of every element, patch elements first, without repeats.
fn element_values(s: &[Src; 2], keys: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for src in [&s[1], &s[0]] {
        let Some(n) = src else { continue };
        for elem in seq_items(n) {
            let vals: Vec<String> = keys
                .iter()
                .map(|k| match field(&Some(elem.clone()), k) {
                    Some(f) if !is_nil_or_empty(&f) => text(&f),
                    _ => String::new(),
                })
                .collect();
            if vals.is_empty() || out.contains(&vals) {
                continue;
            }
            out.push(vals);
        }
    }
    out
}

fn element_primitive_values(s: &[Src; 2]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for src in [&s[1], &s[0]] {
        let Some(n) = src else { continue };
        for item in seq_items(n) {
            let t = vec![text(&item)];
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// Two key tuples match when they agree somewhere and differ only where one is empty.
fn match_values(a: &[String], b: &[String]) -> Option<Vec<String>> {
    if a.len() != b.len() {
        return None;
    }
    let mut common = false;
    let mut res = Vec::new();
    for i in 0..a.len() {
        if a[i] == b[i] {
            common = true;
            res.push(a[i].clone());
            continue;
        }
        if !a[i].is_empty() && !b[i].is_empty() {
            return None;
        }
        res.push(if a[i].is_empty() {
            b[i].clone()
        } else {
            a[i].clone()
        });
    }
    common.then_some(res)
}

fn merge_values(mut list: Vec<Vec<String>>) -> Vec<Vec<String>> {
    for i in 0..list.len() {
        for j in 0..list.len() {
            if let Some(m) = match_values(&list[i], &list[j]) {
                list[i] = m.clone();
                list[j] = m;
            }
        }
    }
    list
}

/// Keys (and values) usable for matching: those with a value somewhere in `list`.
fn validate_keys(
    list: &[Vec<String>],
    values: &[String],
    keys: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut set: Vec<&String> = Vec::new();
    for vs in list {
        for (i, v) in vs.iter().enumerate() {
            if !v.is_empty() && i < keys.len() && !set.contains(&&keys[i]) {
                set.push(&keys[i]);
            }
        }
    }
    if set.is_empty() {
        return (keys.to_vec(), values.to_vec());
    }
    let vk = keys.iter().filter(|k| set.contains(k)).cloned().collect();
    let vv = values
        .iter()
        .enumerate()
        .filter(|(i, v)| !v.is_empty() || keys.get(*i).is_some_and(|k| set.contains(&k)))
        .map(|(_, v)| v.clone())
        .collect();
    (vk, vv)
}

/// kyaml `ElementMatcher`: the first element whose keys have these values.
fn element_list(n: &N, keys: &[String], values: &[String]) -> Src {
    let items = match &*n.borrow() {
        Node::Seq(items) => items.clone(),
        _ => return None,
    };
    let keys: Vec<String> = if keys.is_empty() {
        vec![String::new()]
    } else {
        keys.to_vec()
    };
    let values: Vec<String> = if values.is_empty() {
        vec![String::new()]
    } else {
        values.to_vec()
    };
    if keys[0].is_empty() {
        return items.into_iter().find(|i| text(i) == values[0]);
    }
    for elem in items {
        if !is_map(&elem) {
            continue;
        }
        if keys.len() != values.len() {
            return None;
        }
        let all = keys
            .iter()
            .zip(values.iter())
            .all(|(k, v)| field(&Some(elem.clone()), k).is_some_and(|f| text(&f) == *v));
        if all {
            return Some(elem);
        }
    }
    None
}

fn element_value_list(s: &[Src; 2], keys: &[String], values: &[String]) -> [Src; 2] {
    let (keys, values) = validate_keys(&[values.to_vec()], values, keys);
    let f = |src: &Src| src.as_ref().and_then(|n| element_list(n, &keys, &values));
    [f(&s[0]), f(&s[1])]
}

/// kyaml `FieldMatcher`: the value of field `name` (any value when `value` is empty).
fn field_matcher(rn: &N, name: &str, value: &str) -> R<Src> {
    if matches!(*rn.borrow(), Node::Null) {
        return Ok(None);
    }
    if name.is_empty() {
        if kind(rn) != Kind::Scalar {
            return Err("wrong node kind: expected a scalar list element".into());
        }
        return Ok((text(rn) == value).then(|| rn.clone()));
    }
    match &*rn.borrow() {
        Node::Map(fields) => Ok(fields
            .iter()
            .find(|(k, v)| k == name && (value.is_empty() || text(v) == value))
            .map(|(_, v)| v.clone())),
        _ => Err(format!(
            "wrong node kind: expected a mapping with field {name:?} in the list"
        )),
    }
}

/// kyaml `ElementSetter`: replaces (or, with no element, deletes) the elements matching the
/// key values; appends the element when none matched.
fn element_setter(rn: &N, element: Src, keys: &[String], values: &[String]) -> R<Src> {
    let keys: Vec<String> = if keys.is_empty() {
        vec![String::new()]
    } else {
        keys.to_vec()
    };
    let items = seq_items(rn);
    let mapping_setter = !keys[0].is_empty() && !values.is_empty() && !values[0].is_empty();
    let mut new_content = Vec::new();
    let mut matching = false;
    for elem in items {
        let e = Some(elem.clone());
        if is_missing_or_null(&e) || is_empty_map(&e) {
            continue;
        }
        if !is_map(&elem) && mapping_setter {
            new_content.push(elem);
            continue;
        }
        let mut found = true;
        let mut val: Src = None;
        for (j, key) in keys.iter().enumerate() {
            if j < values.len() {
                val = field_matcher(&elem, key, &values[j])?;
            }
            if val.is_none() {
                found = false;
                break;
            }
        }
        if !found {
            if !values.is_empty() {
                new_content.push(elem);
            }
            continue;
        }
        matching = true;
        if let Some(el) = &element {
            new_content.push(el.clone());
        }
    }
    {
        let mut b = rn.borrow_mut();
        if let Node::Seq(items) = &mut *b {
            *items = new_content;
        }
    }
    if is_missing_or_null(&element) {
        return Ok(None);
    }
    if !matching {
        if let Node::Seq(items) = &mut *rn.borrow_mut() {
            items.push(element.clone().expect("element"));
        }
    }
    Ok(element)
}

fn append_list_node(dst: &N, src: &N, keys: &[String]) -> R<()> {
    for elem in seq_items(src) {
        if keys.first().is_none_or(|k| k.is_empty()) {
            let t = text(&elem);
            element_setter(dst, Some(elem), &[String::new()], &[t])?;
            continue;
        }
        let mut v = Vec::new();
        for key in keys {
            let value = field_matcher(&elem, key, "")?;
            match value {
                None => {
                    if let Node::Seq(items) = &mut *dst.borrow_mut() {
                        items.push(elem.clone());
                    }
                }
                Some(n) => v.push(text(&n)),
            }
        }
        if keys.len() > 1 {
            element_setter(dst, None, keys, &v)?;
        }
        element_setter(dst, Some(elem), keys, &v)?;
    }
    Ok(())
}

fn set_assoc_elements(
    s: &[Src; 2],
    schema: Schema,
    values_list: Vec<Vec<String>>,
    keys: Vec<String>,
    dest: N,
    path: &str,
) -> R<Src> {
    let items = new(Node::Seq(Vec::new()));
    let elem_schema = schema.elements();
    let values_list = if keys.len() > 1 {
        merge_values(values_list)
    } else {
        values_list
    };
    let mut valid_keys: Vec<String> = Vec::new();
    for values in &values_list {
        if values.is_empty() {
            continue;
        }
        let (vk, vv) = validate_keys(&values_list, values, &keys);
        valid_keys = vk;
        let srcs = element_value_list(s, &valid_keys, &vv);
        let val = walk(srcs, elem_schema, &format!("{path}[{}]", vv.join(",")))?;
        let mut exit = false;
        for (i, key) in valid_keys.iter().enumerate() {
            if is_missing_or_null(&val) || is_empty_map(&val) {
                element_setter(&dest, None, &valid_keys, &vv)?;
                exit = true;
            } else if let Some(v) = &val {
                let value = vv.get(i).cloned().unwrap_or_default();
                // (For primitive lists kyaml re-sets the scalar to its own text: a no-op.)
                if !key.is_empty() && field(&val, key).is_none() && !value.is_empty() {
                    if let Node::Map(fields) = &mut *v.borrow_mut() {
                        fields.push((key.clone(), plain(&value)));
                    }
                }
            }
        }
        if exit {
            continue;
        }
        element_setter(&items, val, &valid_keys, &vv)?;
    }
    if values_list.is_empty() {
        return Ok(Some(dest));
    }
    append_list_node(&items, &dest, &valid_keys)?;
    Ok(Some(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    fn y(s: &str) -> Value {
        parse_documents("t.yaml", s).unwrap().remove(0).value
    }

    /// Expected results produced with `kubectl kustomize` (kustomize v5.5.0).
    #[test]
    fn deployment_lists_merge_like_kustomize() {
        let dest = y(r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  finalizers: [a, b]
  labels: {app: web, drop: me}
spec:
  replicas: 1
  template:
    spec:
      tolerations: [{key: a}, {key: b}]
      volumes:
      - {name: v1, configMap: {name: cm1}}
      - {name: v2, emptyDir: {}}
      containers:
      - name: app
        image: nginx
        args: [a, b]
        ports:
        - {containerPort: 80, protocol: TCP}
        - {containerPort: 81}
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        volumeMounts:
        - {name: v1, mountPath: /a}
      - {name: side, image: busybox}
"#);
        let patch = y(r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  finalizers: [c, a]
  labels: {drop: null, nothere: null}
spec:
  newthing: {a: null, b: 1}
  template:
    spec:
      tolerations: [{key: c}]
      volumes:
      - {name: v2, $patch: delete}
      - {name: v3, secret: {secretName: s}}
      containers:
      - name: app
        args: [c]
        ports:
        - {containerPort: 80, name: http}
        - {containerPort: 81, name: x}
        env:
        - {name: B, $patch: delete}
        - {name: C, value: "3"}
        - {name: A, value: "9"}
        volumeMounts:
        - {mountPath: /b, name: v3}
      - image: foo
      - {name: new, image: new}
"#);
        let want = y(r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  finalizers: [c, a, b]
  labels: {app: web}
  name: web
spec:
  newthing: {b: 1}
  replicas: 1
  template:
    spec:
      containers:
      - args: [c]
        env:
        - {name: C, value: "3"}
        - {name: A, value: "9"}
        image: nginx
        name: app
        ports:
        - {containerPort: 80, protocol: TCP}
        - {containerPort: 81, name: x}
        volumeMounts:
        - {mountPath: /b, name: v3}
        - {mountPath: /a, name: v1}
      - {image: new, name: new}
      tolerations: [{key: c}]
      volumes:
      - {name: v3, secret: {secretName: s}}
      - {configMap: {name: cm1}, name: v1}
"#);
        assert_eq!(
            merge(&dest, &patch, &HashSet::new()).unwrap().unwrap(),
            want
        );
    }

    #[test]
    fn service_ports_and_custom_resources() {
        let dest = y("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, targetPort: 8080}\n  - {port: 443, targetPort: 8443, protocol: TCP}\n");
        let patch = y("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, targetPort: 9090}\n  - {port: 443, name: https}\n");
        let got = merge(&dest, &patch, &HashSet::new()).unwrap().unwrap();
        assert_eq!(
            got["spec"]["ports"],
            y("- {port: 80, targetPort: 9090}\n- {port: 443, protocol: TCP, targetPort: 8443}\n")
        );
        // Lists of custom resources are replaced, even with `name` keys.
        let dest = y("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a, b]\n  http:\n  - {name: a, timeout: 1s}\n  - {name: b}\n");
        let patch = y("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  http:\n  - {name: a, timeout: 5s}\n");
        let got = merge(&dest, &patch, &HashSet::new()).unwrap().unwrap();
        assert_eq!(got["spec"]["http"], y("- {name: a, timeout: 5s}\n"));
        assert_eq!(got["spec"]["hosts"], y("[a, b]"));
    }

    #[test]
    fn nulls_directives_and_delete() {
        let dest = y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, creationTimestamp: null}\ndata: {x: '1', y: '2'}\n");
        let patch = y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: null}\n");
        let got = merge(&dest, &patch, &HashSet::new()).unwrap().unwrap();
        assert_eq!(
            got,
            y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, creationTimestamp: null}\ndata: {y: '2'}\n")
        );
        let patch = y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {$patch: replace, z: '3'}\n");
        assert_eq!(
            merge(&dest, &patch, &HashSet::new()).unwrap().unwrap()["data"],
            y("{z: '3'}")
        );
        let patch = y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n$patch: delete\n");
        assert!(merge(&dest, &patch, &HashSet::new()).unwrap().is_none());
        let patch =
            y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {$patch: bogus}\n");
        assert!(merge(&dest, &patch, &HashSet::new()).is_err());
        let patch = y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: [1]\n");
        assert!(merge(&dest, &patch, &HashSet::new()).is_err());
    }
}
