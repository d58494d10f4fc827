//! Inputs shared by the unit tests.

/// A YAML "billion laughs": `x-a` holds nine strings and each of the `levels` anchors after it
/// holds nine aliases of the one before, so the last anchor, `*{returned name}`, expands to
/// 9^(levels+1) strings. Returns the document's prefix and the last anchor's name.
pub fn alias_bomb(levels: usize) -> (String, char) {
    let mut text = String::from(
        "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for name in ('b'..='z').take(levels) {
        let items = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("x-{name}: &{name} [{items}]\n"));
        prev = name;
    }
    (text, prev)
}
