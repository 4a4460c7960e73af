//! Reply bodies of wire contract v1: written by the worker, read by clients.

use serde::{Deserialize, Serialize};

use super::error::{ErrorBody, JobError};

/// For one text of a `split: sentences` job: its segments and how many came from the
/// cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStats {
    /// Segments translated (sentences, and the pieces of over-long ones).
    pub segments: usize,
    /// Of those, answered from the cache.
    pub cached: usize,
}

/// A reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Reply {
    /// Every text translated.
    Ok {
        /// The job's id.
        id: Option<String>,
        /// `translations[i]` answers input `i`.
        translations: Vec<String>,
        /// `cached[i]`: whether `translations[i]` came from the cache (with `split`:
        /// every one of its segments did).
        cached: Vec<bool>,
        /// The model id.
        model: String,
        /// `segments[i]` counts the segments of text `i`; only for `split: sentences`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segments: Option<Vec<SegmentStats>>,
        /// `truncated[i]`: text `i` (or, with `split`, a piece of it that could not be
        /// cut further) was longer than the model reads, and only its start was
        /// translated. Present only when some text was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<Vec<bool>>,
        /// `errors[i]`: why text `i` could not be translated (its translation is then
        /// `""` and `cached[i]` false), or `null`. Present only when some texts failed
        /// and others did not; when every text fails, the job fails as a whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errors: Option<Vec<Option<ErrorBody>>>,
        /// `alternatives[i]`: other translations of text `i`, best first, each
        /// different from `translations[i]` and from one another; at most
        /// `options.alternatives` of them, and fewer (even none) when the model had
        /// no more distinct ones. Present exactly when the job asked for
        /// alternatives; `[]` for a text that gets none (failed, empty, or, with
        /// `split: sentences`, cut into more than one segment).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alternatives: Option<Vec<Vec<String>>>,
    },
    /// The job failed as a whole.
    Error {
        /// The job's id.
        id: Option<String>,
        /// What went wrong.
        error: ErrorBody,
    },
}

impl From<JobError> for Reply {
    fn from(e: JobError) -> Self {
        let JobError { code, message, id } = e;
        Reply::Error {
            id,
            error: ErrorBody { code, message },
        }
    }
}

impl Reply {
    /// JSON bytes of the reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, bools and a fieldless enum cannot fail.
        serde_json::to_vec(self).expect("reply serialisation is infallible")
    }

    /// Parses a reply body. Keys this version does not know are ignored (replies are
    /// lenient, so a worker may add fields before its clients know them); an error
    /// code outside the contract is an error.
    pub fn parse(body: &[u8]) -> Result<Reply, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The job's id, as echoed.
    pub fn id(&self) -> Option<&str> {
        match self {
            Reply::Ok { id, .. } | Reply::Error { id, .. } => id.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn replies_match_the_contract() {
        let ok = Reply::Ok {
            id: Some("a".into()),
            translations: vec!["x".into()],
            cached: vec![true],
            model: "m".into(),
            segments: None,
            truncated: None,
            errors: None,
            alternatives: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&ok.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"a","status":"ok","translations":["x"],"cached":[true],"model":"m"})
        );
        // Some texts cut, one failed: the keys appear, in this order, with `null` for
        // the texts that did not fail.
        let partial = Reply::Ok {
            id: None,
            translations: vec!["x".into(), String::new()],
            cached: vec![false, false],
            model: "m".into(),
            segments: None,
            truncated: Some(vec![true, false]),
            errors: Some(vec![
                None,
                Some(ErrorBody {
                    code: ErrorCode::Internal,
                    message: "boom".into(),
                }),
            ]),
            alternatives: None,
        };
        assert_eq!(
            String::from_utf8(partial.to_bytes()).unwrap(),
            r#"{"status":"ok","id":null,"translations":["x",""],"cached":[false,false],"model":"m","truncated":[true,false],"errors":[null,{"code":"internal","message":"boom"}]}"#
        );
        let err: Reply = JobError::new(ErrorCode::TooLarge, "big").into();
        let v: serde_json::Value = serde_json::from_slice(&err.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":null,"status":"error","error":{"code":"too_large","message":"big"}})
        );
    }

    #[test]
    fn replies_parse_back_and_ignore_unknown_keys() {
        let partial = Reply::Ok {
            id: Some("j".into()),
            translations: vec!["x".into(), String::new()],
            cached: vec![true, false],
            model: "m".into(),
            segments: Some(vec![
                SegmentStats {
                    segments: 2,
                    cached: 1,
                },
                SegmentStats::default(),
            ]),
            truncated: Some(vec![true, false]),
            errors: Some(vec![
                None,
                Some(JobError::new(ErrorCode::Internal, "boom").into()),
            ]),
            alternatives: None,
        };
        assert_eq!(Reply::parse(&partial.to_bytes()).unwrap(), partial);
        let err: Reply = JobError::new(ErrorCode::TooLarge, "big")
            .with_id(Some("k".into()))
            .into();
        assert_eq!(Reply::parse(&err.to_bytes()).unwrap(), err);
        let newer = br#"{"status":"ok","id":null,"translations":["a"],"cached":[false],"model":"m","took_ms":3}"#;
        assert!(matches!(Reply::parse(newer).unwrap(), Reply::Ok { .. }));
        let unknown = br#"{"status":"error","id":null,"error":{"code":"teapot","message":"m"}}"#;
        assert!(Reply::parse(unknown).is_err());
        assert!(Reply::parse(br#"{"status":"maybe"}"#).is_err());
    }

    #[test]
    fn alternatives_are_written_only_when_asked_and_parse_back() {
        let ok = Reply::Ok {
            id: None,
            translations: vec!["a".into(), "b".into()],
            cached: vec![false, true],
            model: "m".into(),
            segments: None,
            truncated: None,
            errors: None,
            alternatives: Some(vec![vec!["a2".into(), "a3".into()], vec![]]),
        };
        assert_eq!(
            String::from_utf8(ok.to_bytes()).unwrap(),
            r#"{"status":"ok","id":null,"translations":["a","b"],"cached":[false,true],"model":"m","alternatives":[["a2","a3"],[]]}"#
        );
        assert_eq!(Reply::parse(&ok.to_bytes()).unwrap(), ok);
        // A reply of an older worker (no key) reads as none asked.
        let old = br#"{"status":"ok","id":null,"translations":["a"],"cached":[false],"model":"m"}"#;
        assert!(matches!(
            Reply::parse(old).unwrap(),
            Reply::Ok {
                alternatives: None,
                ..
            }
        ));
        assert!(Reply::parse(
            br#"{"status":"ok","id":null,"translations":["a"],"cached":[false],"model":"m","alternatives":[[1]]}"#
        )
        .is_err());
    }
}
