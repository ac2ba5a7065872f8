//! Reading an AWS SDK error where it happens (the adapters: S3, DynamoDB, KMS, Secrets
//! Manager): its [`Class`](crate::error::Class), so that only what may pass is retried.

/// The [`Class`](crate::error::Class) of an SDK error: its code, its HTTP status, and whether
/// the request was answered at all (a dispatch failure or time-out was not).
pub fn classify<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> crate::error::Class
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
    R: StatusOf,
{
    use aws_sdk_s3::error::SdkError;
    let answered = !matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    );
    let code = match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    };
    let status = e.raw_response().map(StatusOf::status_of);
    crate::error::Class::of(code, status, answered)
}

/// The HTTP status of a raw response.
pub trait StatusOf {
    fn status_of(&self) -> u16;
}

impl StatusOf for aws_sdk_s3::config::http::HttpResponse {
    fn status_of(&self) -> u16 {
        self.status().as_u16()
    }
}
