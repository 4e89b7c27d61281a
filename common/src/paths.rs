//! Where imgfarm keeps its state, following img's convention.

use std::path::PathBuf;

/// The default state directory: `$XDG_DATA_HOME/imgfarm`, else
/// `$HOME/.local/share/imgfarm`, else `/tmp/imgfarm` (img's rule).
pub fn default_state_dir() -> PathBuf {
    state_dir_from(
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// Pure form of [`default_state_dir`], for tests. Empty values count as unset.
pub fn state_dir_from(xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    let non_empty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    if let Some(xdg) = non_empty(xdg_data_home) {
        return xdg.join("imgfarm");
    }
    if let Some(home) = non_empty(home) {
        return home.join(".local/share/imgfarm");
    }
    PathBuf::from("/tmp/imgfarm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_wins_then_home_then_tmp() {
        assert_eq!(
            state_dir_from(Some("/x".into()), Some("/h".into())),
            PathBuf::from("/x/imgfarm")
        );
        assert_eq!(
            state_dir_from(None, Some("/h".into())),
            PathBuf::from("/h/.local/share/imgfarm")
        );
        assert_eq!(
            state_dir_from(Some("".into()), None),
            PathBuf::from("/tmp/imgfarm")
        );
    }
}
