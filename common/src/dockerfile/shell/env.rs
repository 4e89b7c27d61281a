//! Where expansion looks variables up.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A set of variables for expansion (BuildKit's `shell.EnvGetter`).
///
/// `get` returns `None` for an unset variable and `Some("")` for one set to
/// the empty string; the `:` operators (`${X:-w}`) treat both alike, the
/// others (`${X-w}`) do not. `keys` lists every name, in the order a later
/// entry overrides an earlier one; it is only used for case-insensitive
/// (Windows) lookup.
pub trait Env {
    /// The value of `name`, matched exactly.
    fn get(&self, name: &str) -> Option<String>;
    /// Every variable name.
    fn keys(&self) -> Vec<String>;
}

/// A Docker-style list of `(name, value)` pairs; a later pair overrides an
/// earlier one with the same name, as in an image config's `Env`.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    fn keys(&self) -> Vec<String> {
        self.iter().map(|(key, _)| key.clone()).collect()
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }

    fn keys(&self) -> Vec<String> {
        Env::keys(self.as_slice())
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }

    fn keys(&self) -> Vec<String> {
        BTreeMap::keys(self).cloned().collect()
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }

    fn keys(&self) -> Vec<String> {
        HashMap::keys(self).cloned().collect()
    }
}

/// Lets a `&[(String, String)]` (or any `&E`) be passed as `&dyn Env`.
impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }

    fn keys(&self) -> Vec<String> {
        (**self).keys()
    }
}

/// Look `name` up, ignoring case as Windows does (BuildKit's
/// `NormalizeEnvKey` upper-cases both sides; of several keys that differ
/// only in case, the last one listed wins).
pub(super) fn get_ignoring_case(env: &dyn Env, name: &str) -> Option<String> {
    let wanted = fold_case(name);
    let key = env
        .keys()
        .into_iter()
        .rev()
        .find(|key| fold_case(key) == wanted)?;
    env.get(&key)
}

/// Go's `strings.ToUpper` maps rune by rune; a character whose upper case is
/// several characters (like `ß`) stays as it is.
fn fold_case(text: &str) -> String {
    text.chars()
        .map(|ch| {
            let mut upper = ch.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(single), None) => single,
                _ => ch,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn later_pairs_win() {
        let env = pairs(&[("A", "1"), ("B", ""), ("A", "2")]);
        assert_eq!(Env::get(&env, "A").as_deref(), Some("2"));
        assert_eq!(Env::get(&env, "B").as_deref(), Some(""));
        assert_eq!(Env::get(&env, "C"), None);
        let slice: &[(String, String)] = &env;
        let dynamic: &dyn Env = &slice;
        assert_eq!(dynamic.get("A").as_deref(), Some("2"));
    }

    #[test]
    fn maps() {
        let btree: BTreeMap<String, String> = pairs(&[("A", "1")]).into_iter().collect();
        let hash: HashMap<String, String> = pairs(&[("A", "1")]).into_iter().collect();
        assert_eq!(Env::get(&btree, "A").as_deref(), Some("1"));
        assert_eq!(Env::get(&hash, "A").as_deref(), Some("1"));
        assert_eq!(Env::keys(&hash), vec!["A".to_owned()]);
    }

    #[test]
    fn case_insensitive_lookup() {
        let env = pairs(&[("Path", "1"), ("PATH", "2"), ("straße", "3")]);
        assert_eq!(get_ignoring_case(&env, "path").as_deref(), Some("2"));
        assert_eq!(get_ignoring_case(&env, "STRAßE").as_deref(), Some("3"));
        assert_eq!(get_ignoring_case(&env, "nope"), None);
    }
}
