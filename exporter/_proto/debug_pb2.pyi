from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SPIFFEID(_message.Message):
    __slots__ = ("trust_domain", "path")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    path: str
    def __init__(self, trust_domain: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("svid_chain", "uptime", "svids_count", "last_sync_success", "cached_x509_svids_count", "cached_jwt_svids_count", "cached_svidstore_x509_svids_count")
    class Cert(_message.Message):
        __slots__ = ("id", "expires_at", "subject")
        ID_FIELD_NUMBER: _ClassVar[int]
        EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
        SUBJECT_FIELD_NUMBER: _ClassVar[int]
        id: SPIFFEID
        expires_at: int
        subject: str
        def __init__(self, id: _Optional[_Union[SPIFFEID, _Mapping]] = ..., expires_at: _Optional[int] = ..., subject: _Optional[str] = ...) -> None: ...
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    SVIDS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    CACHED_X509_SVIDS_COUNT_FIELD_NUMBER: _ClassVar[int]
    CACHED_JWT_SVIDS_COUNT_FIELD_NUMBER: _ClassVar[int]
    CACHED_SVIDSTORE_X509_SVIDS_COUNT_FIELD_NUMBER: _ClassVar[int]
    svid_chain: _containers.RepeatedCompositeFieldContainer[GetInfoResponse.Cert]
    uptime: int
    svids_count: int
    last_sync_success: int
    cached_x509_svids_count: int
    cached_jwt_svids_count: int
    cached_svidstore_x509_svids_count: int
    def __init__(self, svid_chain: _Optional[_Iterable[_Union[GetInfoResponse.Cert, _Mapping]]] = ..., uptime: _Optional[int] = ..., svids_count: _Optional[int] = ..., last_sync_success: _Optional[int] = ..., cached_x509_svids_count: _Optional[int] = ..., cached_jwt_svids_count: _Optional[int] = ..., cached_svidstore_x509_svids_count: _Optional[int] = ...) -> None: ...
