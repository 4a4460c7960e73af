//! Language codes: what clients send (ISO 639-1 such as `ko`, or ISO 639-3 where no
//! two-letter code exists) and the tokens multilingual models expect.
//!
//! - **NLLB-200** marks languages with FLORES-200 codes (`kor_Hang`, `eng_Latn`): the
//!   source token goes before the text, the target token is the decoding prefix.
//! - **M2M-100** uses `__ko__`, `__en__` the same way.
//!
//! The NLLB table covers widely used languages; `model.language_codes` adds or
//! overrides entries (e.g. `zh = "zho_Hant"` for Traditional Chinese). A code the
//! client sends that already is a model token (`kor_Hang`) is passed through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a model marks source and target languages.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LanguageTokens {
    /// No language tokens: a bilingual model (OPUS-MT).
    #[default]
    None,
    /// NLLB-200: source token before the text, target token as the decoding prefix.
    Nllb,
    /// M2M-100: like NLLB, with `__xx__` tokens.
    M2m100,
}

/// ISO 639-1 (or 639-3) → FLORES-200 code, for NLLB-200. Sorted by the client code.
pub const NLLB_CODES: &[(&str, &str)] = &[
    ("af", "afr_Latn"),
    ("am", "amh_Ethi"),
    ("ar", "arb_Arab"),
    ("az", "azj_Latn"),
    ("be", "bel_Cyrl"),
    ("bg", "bul_Cyrl"),
    ("bn", "ben_Beng"),
    ("bs", "bos_Latn"),
    ("ca", "cat_Latn"),
    ("cs", "ces_Latn"),
    ("cy", "cym_Latn"),
    ("da", "dan_Latn"),
    ("de", "deu_Latn"),
    ("el", "ell_Grek"),
    ("en", "eng_Latn"),
    ("es", "spa_Latn"),
    ("et", "est_Latn"),
    ("eu", "eus_Latn"),
    ("fa", "pes_Arab"),
    ("fi", "fin_Latn"),
    ("fil", "tgl_Latn"),
    ("fr", "fra_Latn"),
    ("ga", "gle_Latn"),
    ("gl", "glg_Latn"),
    ("gu", "guj_Gujr"),
    ("ha", "hau_Latn"),
    ("he", "heb_Hebr"),
    ("hi", "hin_Deva"),
    ("hr", "hrv_Latn"),
    ("hu", "hun_Latn"),
    ("hy", "hye_Armn"),
    ("id", "ind_Latn"),
    ("is", "isl_Latn"),
    ("it", "ita_Latn"),
    ("ja", "jpn_Jpan"),
    ("jv", "jav_Latn"),
    ("ka", "kat_Geor"),
    ("kk", "kaz_Cyrl"),
    ("km", "khm_Khmr"),
    ("kn", "kan_Knda"),
    ("ko", "kor_Hang"),
    ("lo", "lao_Laoo"),
    ("lt", "lit_Latn"),
    ("lv", "lvs_Latn"),
    ("mk", "mkd_Cyrl"),
    ("ml", "mal_Mlym"),
    ("mn", "khk_Cyrl"),
    ("mr", "mar_Deva"),
    ("ms", "zsm_Latn"),
    ("my", "mya_Mymr"),
    ("ne", "npi_Deva"),
    ("nl", "nld_Latn"),
    ("no", "nob_Latn"),
    ("pa", "pan_Guru"),
    ("pl", "pol_Latn"),
    ("pt", "por_Latn"),
    ("ro", "ron_Latn"),
    ("ru", "rus_Cyrl"),
    ("si", "sin_Sinh"),
    ("sk", "slk_Latn"),
    ("sl", "slv_Latn"),
    ("so", "som_Latn"),
    ("sq", "als_Latn"),
    ("sr", "srp_Cyrl"),
    ("sv", "swe_Latn"),
    ("sw", "swh_Latn"),
    ("ta", "tam_Taml"),
    ("te", "tel_Telu"),
    ("th", "tha_Thai"),
    ("tl", "tgl_Latn"),
    ("tr", "tur_Latn"),
    ("uk", "ukr_Cyrl"),
    ("ur", "urd_Arab"),
    ("uz", "uzn_Latn"),
    ("vi", "vie_Latn"),
    ("yo", "yor_Latn"),
    ("zh", "zho_Hans"),
    ("zu", "zul_Latn"),
];

/// The language tokens a model needs for the pairs it serves: every code of `pairs`
/// that has a token (code → token), and the codes that have none (for a
/// multilingual model, a configuration error).
pub fn pair_tokens(
    kind: LanguageTokens,
    pairs: &[(String, String)],
    overrides: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut tokens = BTreeMap::new();
    let mut missing = Vec::new();
    for code in pairs.iter().flat_map(|(s, t)| [s, t]) {
        if tokens.contains_key(code) || missing.contains(code) {
            continue;
        }
        match model_token(kind, code, overrides) {
            Some(token) => {
                tokens.insert(code.clone(), token);
            }
            None => missing.push(code.clone()),
        }
    }
    (tokens, missing)
}

/// The token `kind` of model uses for the language a client calls `code`, or `None`
/// when there is none (a bilingual model, or a code missing from the table and
/// `overrides`).
pub fn model_token(
    kind: LanguageTokens,
    code: &str,
    overrides: &BTreeMap<String, String>,
) -> Option<String> {
    if let Some(token) = overrides.get(code) {
        return Some(token.clone());
    }
    match kind {
        LanguageTokens::None => None,
        LanguageTokens::Nllb => {
            if is_flores_code(code) {
                return Some(code.to_owned());
            }
            NLLB_CODES
                .binary_search_by_key(&code, |&(iso, _)| iso)
                .ok()
                .map(|i| NLLB_CODES[i].1.to_owned())
        }
        LanguageTokens::M2m100 => {
            if code.len() > 4 && code.starts_with("__") && code.ends_with("__") {
                return Some(code.to_owned());
            }
            let ok = (2..=3).contains(&code.len()) && code.chars().all(|c| c.is_ascii_lowercase());
            ok.then(|| format!("__{code}__"))
        }
    }
}

/// `kor_Hang`: three lowercase letters, `_`, a four-letter script code.
fn is_flores_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 8
        && b[..3].iter().all(u8::is_ascii_lowercase)
        && b[3] == b'_'
        && b[4].is_ascii_uppercase()
        && b[5..].iter().all(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nllb_table_is_sorted_and_well_formed() {
        assert!(NLLB_CODES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(NLLB_CODES.iter().all(|(_, t)| is_flores_code(t)));
    }

    #[test]
    fn client_codes_map_to_model_tokens() {
        let none = BTreeMap::new();
        let t = |k, c| model_token(k, c, &none);
        assert_eq!(t(LanguageTokens::Nllb, "ko").as_deref(), Some("kor_Hang"));
        assert_eq!(t(LanguageTokens::Nllb, "en").as_deref(), Some("eng_Latn"));
        assert_eq!(
            t(LanguageTokens::Nllb, "kor_Hang").as_deref(),
            Some("kor_Hang")
        );
        assert_eq!(t(LanguageTokens::Nllb, "xx"), None);
        assert_eq!(t(LanguageTokens::M2m100, "ko").as_deref(), Some("__ko__"));
        assert_eq!(t(LanguageTokens::M2m100, "ast").as_deref(), Some("__ast__"));
        assert_eq!(t(LanguageTokens::M2m100, "KO"), None);
        assert_eq!(t(LanguageTokens::None, "ko"), None);
    }

    #[test]
    fn overrides_win() {
        let o = BTreeMap::from([("zh".to_string(), "zho_Hant".to_string())]);
        assert_eq!(
            model_token(LanguageTokens::Nllb, "zh", &o).as_deref(),
            Some("zho_Hant")
        );
    }

    #[test]
    fn pair_tokens_maps_every_code_once_and_names_the_missing() {
        let pairs = vec![
            ("ko".to_owned(), "en".to_owned()),
            ("en".to_owned(), "ko".to_owned()),
            ("xx".to_owned(), "en".to_owned()),
        ];
        let (tokens, missing) = pair_tokens(LanguageTokens::Nllb, &pairs, &BTreeMap::new());
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens["ko"], "kor_Hang");
        assert_eq!(missing, ["xx"]);
        let (tokens, missing) = pair_tokens(LanguageTokens::None, &pairs, &BTreeMap::new());
        assert!(tokens.is_empty());
        assert_eq!(missing, ["ko", "en", "xx"]);
    }
}
