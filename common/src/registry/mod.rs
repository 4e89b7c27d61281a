//! Distribution-spec registry client: pull, push, auth and TLS.
