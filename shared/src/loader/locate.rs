//! Where in the config file a parse error is: the line and column of a byte offset, the dotted
//! key whose value starts there, a source's line, and serde's type errors said in the file's terms.

/// The dotted key whose value starts at byte `offset` of the file (`alerts.low_stock_threshold`,
/// `sources[1].rate_limit.burst`), from the table headers above it and the `key =` before it on
/// its line; `None` when the offset is not in a value (a syntax error).
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in text.get(..line_start)?.lines() {
        let l = l.trim();
        if let Some(name) = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|x| x.0)
        {
            let name = name.trim().to_string();
            let n = match counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|x| x.0)
        {
            let name = name.trim();
            // A sub-table of the last array element (`[sources.rate_limit]`) stays under it.
            table = match counts
                .iter()
                .find(|(k, _)| name.starts_with(&format!("{k}.")))
            {
                Some((k, n)) => format!("{k}[{n}]{}", &name[k.len()..]),
                None => name.to_string(),
            };
        }
    }
    // On the value's own line: the key before the last `=` (inside an inline table, the inner
    // key, under the line's own key).
    let head = &before[line_start..];
    let unquote = |k: &str| k.trim().trim_matches('"').to_string();
    let first = head.split_once('=').map(|(k, _)| unquote(k))?;
    let inner = head
        .rsplit(['{', ','])
        .next()
        .and_then(|seg| seg.rsplit_once('='))
        .map(|(k, _)| unquote(k))
        .filter(|k| !k.is_empty() && *k != first);
    let mut key = if table.is_empty() {
        first
    } else {
        format!("{table}.{first}")
    };
    if let Some(inner) = inner {
        key = format!("{key}.{inner}");
    }
    (!key.is_empty()).then_some(key)
}

/// serde's "invalid type: string \"five\", expected i64", with what would be valid in words.
pub(super) fn readable_type_error(message: &str) -> String {
    let Some((got, want)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let words = match want.trim() {
        "i64" | "u64" | "usize" | "u32" | "i32" | "u16" | "u8" => {
            "a whole number, without quotes (for example 5)"
        }
        "f64" | "f32" => "a number, without quotes (for example 1.5)",
        "a boolean" | "bool" => "true or false, without quotes",
        "a string" => "text in double quotes",
        "a sequence" => "a list in brackets (for example [\"a\", \"b\"])",
        other => return format!("{got}, expected {other}"),
    };
    format!("{got}; expected {words}")
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

pub(super) fn find_source_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with("name")
                && l.split_once('=')
                    .map(|(k, v)| k.trim() == "name" && v.trim().trim_matches(['"', '\'']) == name)
                    .unwrap_or(false)
        })
        .map(|i| i + 1)
}
